//! The installer against sparse disk-image files: what lands in every
//! partition, what is refused before anything is written, and the reset
//! when a write fails midway.
//!
//! These run the real mkfs.ext4, debugfs, e2fsck, sgdisk and grub-mkimage
//! (e2fsprogs, gdisk, grub-pc-bin, grub-efi-amd64-bin, grub-efi-arm64-bin,
//! systemd-boot-efi for amd64 and arm64): a missing tool fails the test.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::process::Command;

use super::*;
use crate::install::system::tests::FakeSystem;
use abnix_core::boot::efi::pe_machine;
use abnix_core::boot::esp;
use abnix_core::boot::grub::bios;
use abnix_core::boot::grub::mkimage::GrubTools;
use abnix_core::boot::Bootloader;
use abnix_core::boot::{BootError, SlotState};
use abnix_core::pack::test_support::Sample;
use abnix_core::pack::{pack, PackInput};
use abnix_core::progress::NoProgress;
use abnix_core::system_disk::SystemDisk;
use abnix_core::testutil::FakeRoot;
use abnix_formats::disk::{Fault, FaultyDisk};
use abnix_formats::fat::FatFs;
use abnix_formats::gpt::Gpt;
use abnix_formats::layout::{Arch, MIB};
use abnix_formats::meta::ObjectKind;
use abnix_formats::sign::SecretKey;
use abnix_formats::testutil::{sgdisk, sgdisk_agrees_with};

const DISK_SIZE: u64 = 128 * MIB;
const SEED: [u8; 32] = [42; 32];

fn layout_config() -> LayoutConfig {
    LayoutConfig {
        slot_size: 16 * MIB,
        esp_size: 40 * MIB,
        min_rw_size: 16 * MIB,
        arch: Arch::X86_64,
    }
}

pub(super) fn grub() -> BootloaderSetup {
    BootloaderSetup::Grub {
        mkimage: "grub-mkimage".into(),
        bios_dir: Some("/usr/lib/grub/i386-pc".into()),
        efi_dir: "/usr/lib/grub/x86_64-efi".into(),
    }
}

pub(super) fn systemd_boot() -> BootloaderSetup {
    BootloaderSetup::SystemdBoot {
        efi: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
    }
}

/// GRUB for aarch64: Debian's arm64-efi modules (grub-efi-arm64-bin), no
/// BIOS part.
fn grub_aarch64() -> BootloaderSetup {
    BootloaderSetup::Grub {
        mkimage: "grub-mkimage".into(),
        bios_dir: None,
        efi_dir: "/usr/lib/grub/arm64-efi".into(),
    }
}

/// A packed sample version (12 MiB ext4 image) and a place for disks.
pub(super) struct Fixture {
    pub(super) tmp: tempfile::TempDir,
    sample: Sample,
    bundle: PathBuf,
    keys: TrustedKeys,
    /// An empty sysfs: file targets never consult it.
    sys: FakeRoot,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        Fixture::for_arch(Arch::X86_64)
    }

    /// A version built for `arch` machines.
    fn for_arch(arch: Arch) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let bundle = tmp.path().join("bundle");
        pack(
            &PackInput {
                arch,
                ..sample.input()
            },
            &bundle,
            &NoProgress,
        )
        .unwrap();
        Fixture {
            keys: [sample.key.public()].into_iter().collect(),
            sample,
            bundle,
            tmp,
            sys: FakeRoot::new(),
        }
    }

    pub(super) fn disk(&self) -> PathBuf {
        self.tmp.path().join("disk.img")
    }

    pub(super) fn request(&self, boot: BootloaderSetup) -> Request {
        Request {
            bundle: self.bundle.clone(),
            trusted_keys: self.keys.clone(),
            target: TargetRequest::File {
                path: self.disk(),
                size: DISK_SIZE,
            },
            layout: layout_config(),
            bootloader: boot,
            wipe: false,
            allow_removable: false,
            seed: Some(SEED),
        }
    }

    fn prepare(&self, request: &Request) -> Result<Plan, InstallError> {
        prepare(request, &self.sys.sys())
    }

    fn install(&self, request: &Request) -> Summary {
        self.prepare(request).unwrap().install(&NoProgress).unwrap()
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut file = File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf).unwrap();
    buf
}

fn run(program: &str, args: &[&str], target: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(target)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} {}: {}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// abnix-rw holds a clean ext4 with its label and the host's directories.
pub(super) fn check_rw(disk: &Path, layout: &Layout) {
    let fs = rwfs::at_offset(disk, layout.rw.start);
    run("e2fsck", &["-fn"], &fs);
    let stats = run("debugfs", &["-R", "stats"], &fs);
    assert!(
        stats.contains("Filesystem volume name:   abnix-rw"),
        "{stats}"
    );
    let number = |field: &str| -> u64 {
        let line = stats.lines().find_map(|l| l.strip_prefix(field));
        line.unwrap().trim().parse().unwrap()
    };
    assert_eq!(
        number("Block count:") * number("Block size:"),
        layout.rw.size,
        "fills abnix-rw"
    );
    let listing = run("debugfs", &["-R", "ls -l /var/lib"], &fs);
    assert!(listing.contains(" abnix"), "{listing}");
    let root = run("debugfs", &["-R", "stat /root"], &fs);
    assert!(root.contains("Mode:  0700"), "{root}");
}

/// Everything DESIGN §2 and §7 promise about a disk freshly installed as
/// `request` asked, with either bootloader and for either architecture: the
/// table (the slots' root type is the architecture's), slot A's bytes, slot
/// B empty, the ESP's boot state and EFI binary, abnix-rw. Returns the table.
fn check_installed(f: &Fixture, disk: &Path, sector_size: u32, request: &Request) -> Gpt {
    let bootloader = request.bootloader.kind();
    let arch = request.layout.arch;
    let mut file = File::open(disk).unwrap();
    let gpt = Gpt::read(&mut file, sector_size).unwrap();
    let layout = Layout::from_gpt(&gpt, DISK_SIZE).unwrap();
    assert_eq!(
        layout,
        layout::compute(DISK_SIZE, sector_size, &request.layout).unwrap()
    );
    for slot in [&layout.slot_a, &layout.slot_b] {
        assert_eq!(slot.type_guid, arch.root_type(), "{}", slot.name);
    }
    assert_eq!(gpt, layout.to_gpt(&SEED), "GUIDs come from the seed");

    let image = fs::read(&f.sample.image).unwrap();
    let slot_a = read_at(disk, layout.slot_a.start, layout.slot_a.size);
    assert!(slot_a[..image.len()] == image[..], "slot a holds the image");
    // Slot B has no boot files (checked below) and no filesystem whatever
    // the disk held before.
    let mut slot_b = Region::new(
        File::open(disk).unwrap(),
        layout.slot_b.start,
        layout.slot_b.size,
    );
    assert_eq!(probe_signatures(&mut slot_b).unwrap(), Vec::new());

    let rw_file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .unwrap();
    let mut system = SystemDisk::open(rw_file, sector_size).unwrap();
    assert_eq!(system.bootloader().unwrap(), bootloader);
    let status = system.boot_control().unwrap().status().unwrap();
    assert_eq!(status.next, Some(Slot::A));
    let a = status.slot(Slot::A);
    assert_eq!(a.state, SlotState::Good);
    let info = a.info.as_ref().unwrap();
    assert_eq!((info.version, info.label.as_str()), (5, "sample"));
    assert_eq!(status.slot(Slot::B).state, SlotState::Bad);
    assert_eq!(status.slot(Slot::B).info, None);
    let mut esp_fs = FatFs::open(system.esp()).unwrap();
    assert_eq!(
        esp_fs.read_file(&esp::kernel(Slot::A)).unwrap(),
        fs::read(&f.sample.kernel).unwrap()
    );
    assert_eq!(
        esp_fs.read_file(&esp::initrd(Slot::A)).unwrap(),
        fs::read(&f.sample.initrd).unwrap()
    );
    // The firmware's removable-media path holds a binary for the
    // architecture, and nothing is there for another one.
    let efi = esp_fs.read_file(&esp::efi_boot(arch)).unwrap();
    assert_eq!(pe_machine(&efi), Some(arch.pe_machine()));
    for other in Arch::ALL.into_iter().filter(|&other| other != arch) {
        assert!(!esp_fs.exists(&esp::efi_boot(other)).unwrap(), "{other}");
    }
    drop(esp_fs);
    check_rw(disk, &layout);
    gpt
}

#[test]
fn grub_install_into_a_new_file_writes_every_partition() {
    let f = Fixture::new();
    let request = f.request(grub());
    let plan = f.prepare(&request).unwrap();
    assert_eq!(plan.contents, Contents::new_file());
    assert!(!f.disk().exists(), "prepare writes nothing");
    let text = plan.to_string();
    assert!(text.contains("installing version 5 \"sample\""), "{text}");
    assert!(text.contains("bootloader: grub (BIOS and UEFI)"), "{text}");
    let summary = plan.install(&NoProgress).unwrap();
    let text = summary.to_string();
    assert!(text.starts_with("installed version 5 \"sample\""), "{text}");
    assert!(text.contains("5  abnix-rw"), "{text}");

    let disk = f.disk();
    assert_eq!(fs::metadata(&disk).unwrap().len(), DISK_SIZE);
    let gpt = check_installed(&f, &disk, 512, &request);
    sgdisk_agrees_with(&gpt, &disk);
    assert!(sgdisk(&["-p"], &disk).contains("abnix-esp"));

    // The BIOS boot code: core.img in abnix-bios, patched to its own LBA,
    // boot.img in the MBR pointing at it, the protective MBR kept.
    let images = GrubTools::system().bios_images().unwrap();
    let bios_lba = plan.layout.bios.start / 512;
    let core = bios::patch_core(&images.core_img, bios_lba).unwrap();
    assert_eq!(
        read_at(&disk, plan.layout.bios.start, core.len() as u64),
        core
    );
    let mbr: [u8; 512] = read_at(&disk, 0, 512).try_into().unwrap();
    let mut pristine = mbr;
    pristine[..440].fill(0);
    assert_eq!(pristine, gpt::protective_mbr(&[0; 512], DISK_SIZE / 512));
    assert_eq!(
        mbr,
        bios::patch_mbr(&images.boot_img, &pristine, bios_lba).unwrap()
    );
}

/// systemd-boot on a disk with 4096-byte logical sectors (a 4Kn NVMe
/// drive): prepared as a file, then given the device's sector size, which
/// is what a 4Kn disk looks like to the installer. The ESP is big enough
/// for FAT32 with 4 KiB sectors.
#[test]
fn systemd_boot_install_on_4096_byte_sectors() {
    let f = Fixture::new();
    let mut request = f.request(systemd_boot());
    request.layout.esp_size = 300 * MIB;
    request.target = TargetRequest::File {
        path: f.disk(),
        size: 4 * DISK_SIZE,
    };
    let mut plan = f.prepare(&request).unwrap();
    assert_eq!(plan.boot.describe(), "systemd-boot (UEFI)");
    plan.target.sector_size = 4096;
    plan.layout = layout::compute(4 * DISK_SIZE, 4096, &request.layout).unwrap();
    plan.install(&NoProgress).unwrap();

    let disk = f.disk();
    let mut file = File::open(&disk).unwrap();
    let gpt = Gpt::read(&mut file, 4096).unwrap();
    assert_eq!(gpt, plan.layout.to_gpt(&SEED));
    let mut system = SystemDisk::open(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&disk)
            .unwrap(),
        4096,
    )
    .unwrap();
    assert_eq!(system.bootloader().unwrap(), Bootloader::SystemdBoot);
    let status = system.boot_control().unwrap().status().unwrap();
    assert_eq!(status.next, Some(Slot::A));
    assert_eq!(status.slot(Slot::A).state, SlotState::Good);
    assert_eq!(status.slot(Slot::B).state, SlotState::Bad);
    // No BIOS boot code: the MBR's code area stays empty.
    assert!(read_at(&disk, 0, 440).iter().all(|&b| b == 0));
    check_rw(&disk, &plan.layout);
}

#[test]
fn systemd_boot_install_on_512_byte_sectors() {
    let f = Fixture::new();
    let request = f.request(systemd_boot());
    f.install(&request);
    let gpt = check_installed(&f, &f.disk(), 512, &request);
    sgdisk_agrees_with(&gpt, &f.disk());
}

/// A disk for aarch64 machines, written on this x86_64 machine (as Nix's
/// template build does), with either bootloader: the slots get aarch64's
/// root type, `EFI/BOOT/BOOTAA64.EFI` holds an arm64 EFI application
/// (GRUB's made from arm64-efi modules, or systemd-boot), and there is no
/// BIOS boot code: the MBR's code area and abnix-bios stay empty.
#[test]
fn aarch64_installs_with_either_bootloader() {
    // Debian's systemd-boot-efi:arm64.
    let systemd_boot_aa64 = BootloaderSetup::SystemdBoot {
        efi: "/usr/lib/systemd/boot/efi/systemd-bootaa64.efi".into(),
    };
    for (setup, describe) in [
        (grub_aarch64(), "grub (UEFI)"),
        (systemd_boot_aa64, "systemd-boot (UEFI)"),
    ] {
        let f = Fixture::for_arch(Arch::Aarch64);
        let mut request = f.request(setup);
        request.layout.arch = Arch::Aarch64;
        let plan = f.prepare(&request).unwrap();
        let text = plan.to_string();
        assert!(
            text.contains(&format!("bootloader: {describe} for aarch64\n")),
            "{text}"
        );
        assert!(
            text.contains("aarch64 machines boot through UEFI only: no BIOS boot code, abnix-bios stays empty"),
            "{text}"
        );
        let summary = plan.install(&NoProgress).unwrap();
        assert_eq!(summary.arch, Arch::Aarch64);

        let disk = f.disk();
        let gpt = check_installed(&f, &disk, 512, &request);
        sgdisk_agrees_with(&gpt, &disk);
        // sgdisk names the type too: Linux ARM64 root (/).
        let info = sgdisk(&["-i", "3"], &disk);
        assert!(
            info.contains("B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
            "{info}"
        );
        let layout = Layout::from_gpt(&gpt, DISK_SIZE).unwrap();
        assert!(read_at(&disk, 0, 440).iter().all(|&b| b == 0), "MBR code");
        if request.bootloader.kind() == Bootloader::Grub {
            // GRUB on arm64-efi has no PC serial port: the firmware's
            // console is the serial console there.
            let mut system = SystemDisk::open(File::open(&disk).unwrap(), 512).unwrap();
            let cfg = FatFs::open(system.esp())
                .unwrap()
                .read_file(esp::GRUB_CFG)
                .unwrap();
            assert!(!String::from_utf8(cfg).unwrap().contains("serial"));
        }
        assert!(
            read_at(&disk, layout.bios.start, layout.bios.size)
                .iter()
                .all(|&b| b == 0),
            "abnix-bios"
        );
    }
}

/// GRUB's BIOS parts and binaries for another architecture are refused for
/// an aarch64 disk before anything is written.
#[test]
fn aarch64_refuses_bios_grub_and_x86_64_binaries() {
    let f = Fixture::for_arch(Arch::Aarch64);
    for (setup, expected) in [
        (
            grub(),
            "--grub-bios-dir: aarch64 machines boot through UEFI only",
        ),
        (
            BootloaderSetup::Grub {
                mkimage: "grub-mkimage".into(),
                bios_dir: None,
                efi_dir: "/usr/lib/grub/x86_64-efi".into(),
            },
            "expected GRUB's arm64-efi module directory",
        ),
        (systemd_boot(), "an EFI application for x86_64, not aarch64"),
    ] {
        let mut request = f.request(setup);
        request.layout.arch = Arch::Aarch64;
        let err = f.prepare(&request).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        assert!(!f.disk().exists(), "nothing written");
    }
}

/// Installing again over an abnix disk needs --wipe (its abnix-rw holds
/// that machine's data) and says what it is; what an update left in slot B
/// (a root filesystem with its own UUID) is erased, so `root=UUID=` can
/// never find two candidates; the new seed gives new GUIDs.
#[test]
fn reinstalling_replaces_an_earlier_installation_and_its_filesystems() {
    let f = Fixture::new();
    f.install(&f.request(grub()));
    let layout = layout::compute(DISK_SIZE, 512, &layout_config()).unwrap();
    let image = fs::read(&f.sample.image).unwrap();
    let mut disk = fs::OpenOptions::new().write(true).open(f.disk()).unwrap();
    disk.seek(SeekFrom::Start(layout.slot_b.start)).unwrap();
    std::io::Write::write_all(&mut disk, &image).unwrap();
    drop(disk);

    let mut again = f.request(systemd_boot());
    again.seed = Some([7; 32]);
    let before = fs::read(f.disk()).unwrap();
    assert_eq!(
        f.prepare(&again).unwrap_err().to_string(),
        format!(
            "{} holds an earlier abnix installation (its abnix-rw holds that machine's /var, /home and /root): pass --wipe to erase it",
            f.disk().display()
        )
    );
    assert!(fs::read(f.disk()).unwrap() == before, "nothing written");
    again.wipe = true;
    let plan = f.prepare(&again).unwrap();
    assert_eq!(plan.contents.earlier_abnix(), Some(layout.clone()));
    assert!(plan
        .to_string()
        .contains("ERASING what it holds: an earlier abnix installation"));
    plan.install(&NoProgress).unwrap();

    let mut slot_b = Region::new(
        File::open(f.disk()).unwrap(),
        layout.slot_b.start,
        layout.slot_b.size,
    );
    assert_eq!(probe_signatures(&mut slot_b).unwrap(), Vec::new());
    let gpt = Gpt::read(&mut File::open(f.disk()).unwrap(), 512).unwrap();
    assert_eq!(gpt, layout.to_gpt(&[7; 32]));
    let mut system = SystemDisk::open(
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.disk())
            .unwrap(),
        512,
    )
    .unwrap();
    assert_eq!(system.bootloader().unwrap(), Bootloader::SystemdBoot);
}

/// A disk holding someone's filesystem is refused, untouched, unless wiping
/// is allowed; then it is installed and nothing of the old filesystem is
/// found on the disk.
#[test]
fn foreign_contents_are_refused_unless_wiping_is_allowed() {
    let f = Fixture::new();
    File::create(f.disk()).unwrap().set_len(DISK_SIZE).unwrap();
    run("mkfs.ext4", &["-q", "-F", "-L", "photos"], &f.disk());
    let before = fs::read(f.disk()).unwrap();

    let request = f.request(grub());
    let err = f.prepare(&request).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} holds ext4 filesystem labelled \"photos\": pass --wipe to erase it",
            f.disk().display()
        )
    );
    assert!(fs::read(f.disk()).unwrap() == before, "nothing written");

    let wipe = Request {
        wipe: true,
        ..request
    };
    let plan = f.prepare(&wipe).unwrap();
    assert!(plan
        .to_string()
        .contains("ERASING what it holds: ext4 filesystem labelled \"photos\""));
    plan.install(&NoProgress).unwrap();
    let found = probe_signatures(&mut File::open(f.disk()).unwrap()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(matches!(found[0].kind, crate::probe::SignatureKind::Gpt(_)));
    check_installed(&f, &f.disk(), 512, &wipe);
}

/// An existing smaller file is extended, keeping it sparse; a larger one
/// is refused.
#[test]
fn a_file_target_is_created_or_extended_never_truncated() {
    let f = Fixture::new();
    File::create(f.disk())
        .unwrap()
        .set_len(DISK_SIZE / 2)
        .unwrap();
    f.install(&f.request(grub()));
    let meta = fs::metadata(f.disk()).unwrap();
    assert_eq!(meta.len(), DISK_SIZE);
    use std::os::unix::fs::MetadataExt;
    assert!(
        meta.blocks() * 512 < DISK_SIZE / 2,
        "sparse: {} bytes allocated",
        meta.blocks() * 512
    );

    let mut bigger = f.request(grub());
    bigger.target = TargetRequest::File {
        path: f.disk(),
        size: DISK_SIZE - MIB,
    };
    let err = f.prepare(&bigger).unwrap_err();
    assert!(matches!(err, InstallError::FileLarger { .. }), "{err}");

    let mut device = f.request(grub());
    device.target = TargetRequest::File {
        path: "/dev/null".into(),
        size: DISK_SIZE,
    };
    assert_eq!(
        f.prepare(&device).unwrap_err().to_string(),
        "/dev/null: not a regular file (use --disk for a device)"
    );
}

/// Every bad input is refused by prepare with an error that says what to
/// do, and the target file is never created.
#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let f = Fixture::new();
    let check = |request: &Request, expect: &str| {
        let err = f.prepare(request).unwrap_err().to_string();
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
        assert!(!f.disk().exists(), "{expect}: the target was created");
    };

    let mut missing = f.request(grub());
    missing.bundle = f.tmp.path().join("no-such-bundle");
    check(&missing, "no-such-bundle is missing");

    let mut no_keys = f.request(grub());
    no_keys.trusted_keys = TrustedKeys::new();
    check(&no_keys, "no trusted key");

    let mut wrong_key = f.request(grub());
    wrong_key.trusted_keys = [SecretKey::generate("other").unwrap().public()]
        .into_iter()
        .collect();
    check(&wrong_key, "does not verify");

    let mut other_arch = f.request(grub_aarch64());
    other_arch.layout.arch = Arch::Aarch64;
    check(
        &other_arch,
        "the bundle's version 5 is built for x86_64 machines, not aarch64 (--arch)",
    );

    let mut small_slot = f.request(grub());
    small_slot.layout.slot_size = 8 * MIB;
    check(
        &small_slot,
        "more than a slot of 8.0 MiB (8388608 bytes): raise the slot size",
    );

    let mut small_disk = f.request(grub());
    small_disk.target = TargetRequest::File {
        path: f.disk(),
        size: 64 * MIB,
    };
    check(&small_disk, "disk too small: the layout needs");

    let mut not_a_device = f.request(grub());
    not_a_device.target = TargetRequest::Disk(f.sample.image.clone());
    check(
        &not_a_device,
        "not a block device (use --file for a disk-image file)",
    );

    let mut no_grub = f.request(grub());
    no_grub.bootloader = BootloaderSetup::Grub {
        mkimage: "/nonexistent/grub-mkimage".into(),
        bios_dir: None,
        efi_dir: "/usr/lib/grub/x86_64-efi".into(),
    };
    check(&no_grub, "running /nonexistent/grub-mkimage");

    // A corrupt first chunk of the image: found when its superblock is read.
    let image = f.bundle.join(
        fs::read_dir(&f.bundle)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .find(|n| n.to_string_lossy().ends_with(".img.zst"))
            .unwrap(),
    );
    let pristine = fs::read(&image).unwrap();
    let mut bytes = pristine.clone();
    bytes[100] ^= 1;
    fs::write(&image, &bytes).unwrap();
    check(
        &f.request(grub()),
        "reading the image's first chunk: chunk 0",
    );
    fs::write(&image, &pristine).unwrap();

    // A corrupt kernel: found when the bundle is opened.
    let kernel = fs::read_dir(&f.bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".kernel"))
        .unwrap();
    let mut bytes = fs::read(&kernel).unwrap();
    bytes[100] ^= 1;
    fs::write(&kernel, &bytes).unwrap();
    check(&f.request(grub()), "has SHA-256");
}

/// The ESP size at which `request` is refused for its ESP, and the size
/// that error names, after checking that nothing was written.
fn esp_refused(f: &Fixture, request: &Request) -> (String, u64) {
    let err = f.prepare(request).unwrap_err();
    assert!(!f.disk().exists(), "the target was created");
    let text = err.to_string();
    match err {
        InstallError::EspTooSmall { needed, size, .. } => {
            assert_eq!(size, request.layout.esp_size);
            assert!(needed > size && needed % MIB == 0, "{text}");
            assert!(
                text.ends_with(&format!("pass --esp-size {}M or more", needed / MIB)),
                "{text}"
            );
            (text, needed)
        }
        other => panic!("expected EspTooSmall, got {other}"),
    }
}

/// An ESP below FAT32's minimum for the sector size is refused before
/// anything is written; the size the error names is the smallest that
/// works.
#[test]
fn an_esp_too_small_for_fat32_is_refused_with_the_size_that_fits() {
    let f = Fixture::new();
    let mut request = f.request(grub());
    request.layout.esp_size = 16 * MIB;
    let (text, needed) = esp_refused(&f, &request);
    assert!(
        text.starts_with(
            "an ESP of 16.0 MiB cannot hold FAT32 on 512-byte sectors, grub (BIOS and UEFI) and the boot files of two slots"
        ),
        "{text}"
    );
    // FAT32 needs 65525 clusters: about 32.5 MiB with 512-byte sectors.
    assert_eq!(needed, 33 * MIB);
    request.layout.esp_size = needed - MIB;
    esp_refused(&f, &request);
    request.layout.esp_size = needed;
    f.prepare(&request).unwrap();
}

/// An initrd that fits an ESP once but not twice is refused: an update
/// writes slot B's boot files beside slot A's, which stay as the fallback.
/// At the size the error names, the installed disk takes slot B's files (the
/// updater's own check passes); a MiB less would install, then refuse every
/// update.
#[test]
fn an_esp_that_holds_one_slot_but_not_two_is_refused() {
    let f = Fixture::new();
    let initrd = f.tmp.path().join("big-initrd");
    File::create(&initrd).unwrap().set_len(24 * MIB).unwrap();
    let bundle = f.tmp.path().join("big");
    let mut input = f.sample.input();
    input.initrd = initrd.clone();
    pack(&input, &bundle, &NoProgress).unwrap();
    let mut request = f.request(systemd_boot());
    request.bundle = bundle;
    request.target = TargetRequest::File {
        path: f.disk(),
        size: 2 * DISK_SIZE,
    };
    let (text, needed) = esp_refused(&f, &request);
    assert!(
        text.contains("(a 21.5 KiB kernel and a 24.0 MiB initrd each: slot a's now, slot b's beside them at an update)"),
        "{text}"
    );
    assert!(needed > 48 * MIB, "two initrds: {needed}");

    request.layout.esp_size = needed;
    let mut plan = f.prepare(&request).unwrap();
    let info = slot_info(&plan.bundle);
    let (kernel_len, initrd_len) = {
        let meta = plan.bundle.signed.meta();
        (meta.kernel.size, meta.initrd.size)
    };
    let slot_b_fits = |layout: &Layout| {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.disk())
            .unwrap();
        let mut system = SystemDisk::open(file, 512).unwrap();
        assert_eq!(system.layout(), layout);
        let mut boot = system.boot_control().unwrap();
        boot.check_boot_files(Slot::B, &info, kernel_len, initrd_len)
    };
    plan.install(&NoProgress).unwrap();
    slot_b_fits(&plan.layout).unwrap();

    // Installed anyway a MiB smaller, the first update would find no room.
    let smaller = LayoutConfig {
        esp_size: needed - MIB,
        ..request.layout.clone()
    };
    plan.layout = layout::compute(2 * DISK_SIZE, 512, &smaller).unwrap();
    fs::remove_file(f.disk()).unwrap();
    plan.install(&NoProgress).unwrap();
    assert!(matches!(
        slot_b_fits(&plan.layout),
        Err(BootError::NoRoom { slot: Slot::B, .. })
    ));
}

/// The image's filesystem is read from the superblock in its first chunk:
/// a disk whose logical sectors are larger than its blocks is not eligible
/// (ext4 of 1 KiB blocks on a 4Kn disk), one whose sectors are not larger
/// is (erofs of 4 KiB blocks on the same disk: chosen, then opened, which
/// the fake machine cannot do).
#[test]
fn the_image_block_size_limits_the_sector_size() {
    let f = Fixture::new();
    let root = FakeRoot::new();
    let sdx = root.disk("sdx", (8, 0), 4 * DISK_SIZE / 512, &[]);
    fs::write(sdx.join("queue/logical_block_size"), "4096\n").unwrap();
    let system = FakeSystem::new(root);
    let mut request = f.request(systemd_boot());
    request.target = TargetRequest::Auto;

    let err = prepare(&request, &system).unwrap_err().to_string();
    assert_eq!(
        err,
        "no eligible disk to install onto\n  sdx: its logical sectors are 4096 bytes, larger than \
         the 1024-byte blocks of the image's ext4 filesystem, which cannot be mounted from it (use \
         a disk with smaller sectors, or build the image with 4096-byte blocks)"
    );

    let tree = f.tmp.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/os-release"), "ID=abnix-test\n").unwrap();
    let erofs = f.tmp.path().join("root.erofs");
    run(
        "mkfs.erofs",
        &[
            "--quiet",
            "-U6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab",
            erofs.to_str().unwrap(),
        ],
        &tree,
    );
    let mut input = f.sample.input();
    input.image = erofs;
    let bundle = f.tmp.path().join("erofs-bundle");
    pack(&input, &bundle, &NoProgress).unwrap();
    request.bundle = bundle;
    match prepare(&request, &system) {
        Err(InstallError::Open { path, .. }) => assert_eq!(path, Path::new("/dev/sdx")),
        other => panic!("expected sdx chosen, then not opened: {other:?}"),
    }
}

/// A version whose command line GRUB would alter is refused for GRUB (and
/// accepted for systemd-boot, which passes it verbatim).
#[test]
fn a_command_line_grub_cannot_carry_is_refused_before_writing() {
    let f = Fixture::new();
    let bundle = f.tmp.path().join("quoted");
    let mut input: PackInput = f.sample.input();
    input.cmdline = "init=/init quote='a'".into();
    pack(&input, &bundle, &NoProgress).unwrap();
    let mut request = f.request(grub());
    request.bundle = bundle;
    let err = f.prepare(&request).unwrap_err().to_string();
    assert!(
        err.starts_with("version 5 cannot be booted by grub: "),
        "{err}"
    );
    request.bootloader = systemd_boot();
    f.prepare(&request).unwrap();
}

/// A write that fails at any step leaves a disk without a partition table
/// (so nothing boots it half-installed) and an error that says so.
#[test]
fn a_failed_write_at_any_step_wipes_the_partition_table() {
    let f = Fixture::new();
    let plan = f.prepare(&f.request(grub())).unwrap();
    let open = |opening| plan.target.open(opening);
    let fresh = || {
        let _ = fs::remove_file(f.disk());
    };

    // How many bytes a whole installation writes through the disk handle.
    fresh();
    let target = open(Opening::Write).unwrap().map(FaultyDisk::counting);
    let counter = target.disk.counter();
    let mut target = Some(target);
    execute(
        &plan,
        |_| Ok(target.take().expect("opened once when all goes well")),
        &NoProgress,
    )
    .unwrap();
    let total = counter.lock().unwrap().bytes;
    let BootPayload::Grub {
        bios: Some(images), ..
    } = &plan.boot
    else {
        panic!("GRUB with BIOS boot code")
    };
    let core_len = bios::patch_core(&images.core_img, 2048).unwrap().len() as u64;

    type Step = fn(&WriteError) -> bool;
    let cases: [(u64, &str, Step); 6] = [
        (0, "erase", |e| matches!(e, WriteError::Erase(_))),
        (600, "table", |e| matches!(e, WriteError::Table(_))),
        (8 * MIB, "slot", |e| matches!(e, WriteError::Slot(_))),
        (total - 512 - core_len - 300, "esp", |e| {
            matches!(e, WriteError::Esp { .. } | WriteError::BootFiles(_))
        }),
        (total - 512 - 100, "core.img", |e| {
            matches!(e, WriteError::Bios(_))
        }),
        (total - 1, "boot.img", |e| matches!(e, WriteError::Bios(_))),
    ];
    for (budget, step, expected) in cases {
        fresh();
        let mut opened = 0;
        let err = execute(
            &plan,
            |opening| {
                opened += 1;
                let target = open(opening)?;
                Ok(if opened == 1 {
                    target.map(|file| FaultyDisk::failing_after(file, budget, Fault::Error))
                } else {
                    target.map(FaultyDisk::counting)
                })
            },
            &NoProgress,
        )
        .unwrap_err();
        let InstallError::Failed { failed, reset } = &err else {
            panic!("{step}: {err}")
        };
        assert!(expected(failed), "{step}: failed at {failed}");
        assert!(reset.is_none(), "{step}: {err}");
        assert!(
            err.to_string()
                .ends_with("The partition table was wiped, so the disk cannot boot half-installed"),
            "{err}"
        );
        let mut disk = File::open(f.disk()).unwrap();
        assert!(
            Gpt::read(&mut disk, 512).is_err(),
            "{step}: a table survived"
        );
        assert!(
            read_at(&f.disk(), 0, 512).iter().all(|&b| b == 0),
            "{step}: MBR boot code or partition records survived"
        );
        let found = probe_signatures(&mut disk).unwrap();
        assert!(
            !found
                .iter()
                .any(|s| matches!(s.kind, crate::probe::SignatureKind::Gpt(_))),
            "{step}: {found:?}"
        );
    }

    // A reset that cannot even open the disk is reported as such.
    fresh();
    let mut opened = 0;
    let err = execute(
        &plan,
        |opening| {
            opened += 1;
            if opened == 1 {
                Ok(open(opening)?.map(|file| FaultyDisk::failing_after(file, 0, Fault::Error)))
            } else {
                Err(InstallError::Open {
                    path: f.disk(),
                    source: io::Error::other("disk gone").into(),
                })
            }
        },
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "Wiping the partition table failed too ({}: disk gone): do not boot this disk, install again or wipe it",
            f.disk().display()
        )),
        "{err}"
    );
}

/// The bundle is verified when it is opened; a kernel or initrd replaced
/// in it afterwards (during `--countdown`, say) by other bytes of the same
/// length is caught as it is written, and the disk is left unbootable.
#[test]
fn a_bundle_file_changed_after_it_was_verified_is_caught_as_it_is_written() {
    for (what, kind) in [
        ("kernel", ObjectKind::Kernel),
        ("initrd", ObjectKind::Initrd),
    ] {
        let f = Fixture::new();
        let plan = f.prepare(&f.request(systemd_boot())).unwrap();
        let meta = plan.bundle.signed.meta();
        let path = f.bundle.join(abnix_formats::meta::object_name(
            meta.version,
            meta.id,
            kind,
        ));
        let mut bytes = fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, bytes).unwrap();

        let err = plan.install(&NoProgress).unwrap_err();
        let InstallError::Failed { failed, reset } = &err else {
            panic!("{what}: {err}")
        };
        assert!(
            matches!(**failed, WriteError::BootFiles(BootError::Unverified(_))),
            "{what}: {failed}"
        );
        assert!(
            err.to_string().contains(&format!(".{}", kind.suffix())),
            "{err}"
        );
        assert!(reset.is_none(), "{what}: {err}");
        let mut disk = File::open(f.disk()).unwrap();
        assert!(
            Gpt::read(&mut disk, 512).is_err(),
            "{what}: a table survived"
        );
    }
}

/// Named disks read from a fake sysfs: each way a disk can be in use, the
/// installer's own medium, a partition instead of a disk. A named
/// removable disk is accepted.
/// Named disks read from a fake sysfs: each way a disk can be in use (sysfs
/// shows it, a loop device reads a file from it, or the kernel refuses
/// exclusive access), the installer's own medium, a partition instead of a
/// disk. A named removable disk is accepted.
#[test]
fn named_disks_in_use_are_refused() {
    let root = FakeRoot::new();
    root.disk("vda", (253, 0), 2 << 21, &[("vda1", 1), ("vda2", 2)]);
    root.disk("vdb", (253, 16), 2 << 21, &[("vdb1", 1)]);
    root.disk("vdc", (253, 32), 2 << 21, &[("vdc1", 1)]);
    let vdd = root.disk("vdd", (253, 48), 2 << 21, &[]);
    fs::write(vdd.join("removable"), "1\n").unwrap();
    let vde = root.disk("vde", (253, 64), 2 << 21, &[("vde1", 1)]);
    fs::create_dir_all(vde.join("vde1/holders/md0")).unwrap();
    root.disk("vdf", (253, 80), 2 << 21, &[]);
    root.disk("vdg", (253, 96), 2 << 21, &[("vdg1", 1)]);
    root.disk("sr0", (11, 0), 2 << 21, &[]);
    root.disk("loop0", (7, 0), 2 << 11, &[]);
    root.write(
        "proc/self/mountinfo",
        "22 1 253:2 / /data rw - ext4 /dev/vda2 rw\n23 1 253:17 / /iso ro - iso9660 /dev/vdb1 ro\n",
    );
    root.write(
        "proc/swaps",
        "Filename Type Size Used Priority\n/dev/vdc1 partition 1024 0 -2\n",
    );
    let mut system = FakeSystem::new(root);
    // vdf is held by something this namespace does not see; loop0's file is
    // on vdg1, mounted out of sight too.
    system.busy.insert("vdf".into());
    system.attach_loop("loop0", "/srv/images/vm.img", (253, 97));
    let survey = medium::survey(&system, Path::new("/nowhere/bundle")).unwrap();
    let req = Requirements {
        layout: LayoutConfig {
            slot_size: 64 * MIB,
            esp_size: 64 * MIB,
            min_rw_size: 64 * MIB,
            arch: Arch::X86_64,
        },
        bios_boot: true,
        allow_removable: false,
        image_fs: abnix_formats::fsid::FsType::Ext4,
        image_block_size: 4096,
    };
    let refuse = |name: &str, expect: &str| {
        let path = PathBuf::from("/dev").join(name);
        let err = check_named_disk(&system, &path, name, &survey, &req).unwrap_err();
        assert_eq!(err.to_string(), format!("/dev/{name}{expect}"));
    };
    refuse(
        "vda",
        " cannot be the target: it is in use: /dev/vda2 is mounted on /data",
    );
    refuse(
        "vdb",
        " cannot be the target: it holds the installer itself (/dev/vdb1 is mounted on /iso)",
    );
    refuse(
        "vdc",
        " cannot be the target: it is in use: /dev/vdc1 is active swap",
    );
    refuse(
        "vde",
        " cannot be the target: it is in use: md0 is stacked on it",
    );
    refuse(
        "vdf",
        " cannot be the target: it is in use: the kernel refuses exclusive access (Device or resource busy (os error 16))",
    );
    refuse(
        "vdg",
        " cannot be the target: it is in use: /dev/loop0 reads its backing file /srv/images/vm.img from /dev/vdg1",
    );
    refuse("vda1", ": vda1 is not a whole disk (a partition?)");
    let disk = check_named_disk(&system, Path::new("/dev/vdd"), "vdd", &survey, &req).unwrap();
    assert!(disk.removable);

    // The same machine, automatically: nothing is eligible (sr0 is an
    // optical drive, vdd removable), so nothing is opened.
    let f = Fixture::new();
    let mut request = f.request(grub());
    request.target = TargetRequest::Auto;
    let err = prepare(&request, &system).unwrap_err().to_string();
    assert!(
        err.starts_with("no eligible disk to install onto\n  vda: it is in use"),
        "{err}"
    );
    assert!(err.contains("\n  vdb: it holds the installer itself (/dev/vdb1 is mounted on /iso)"));
    assert!(err.contains("\n  vdd: it is removable (allow it with --allow-removable)"));
    assert!(err.contains("\n  vdf: it is in use: the kernel refuses exclusive access"));
    assert!(err.contains("\n  vdg: it is in use: /dev/loop0 reads"));
    assert!(err.contains("\n  sr0: optical drive"));
}
