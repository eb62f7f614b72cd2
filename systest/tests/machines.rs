//! The harness proves itself: fixture versions boot in QEMU (TCG) and behave
//! as told, and the machine controls (reboots, restarts, power cuts) work.
//!
//! Boot times are printed: run with `-- --nocapture` to see them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use abnix_formats::layout::Arch;
use abnix_formats::slot::Slot;
use abnix_systest::disk::{self, Partition, PartitionType};
use abnix_systest::initramfs::{self, InstallerEnv};
use abnix_systest::kernel::Kernel;
use abnix_systest::version::{AfterCommands, Behaviour, FixtureVersion, VersionSpec};
use abnix_systest::vm::{Boot, Firmware, Machine, MachineSpec, OnReboot, Vm};
use abnix_systest::{paths, workspace};

/// Generous for TCG on a loaded 2-core machine; a fixture boots in seconds.
const BOOT: Duration = Duration::from_secs(120);
/// For steps that take a moment once booted (a command, a power-off).
const STEP: Duration = Duration::from_secs(60);
const RW_SIZE: u64 = 32 << 20;
/// A dynamically linked host tool (such as mkfs.ext4 for the installer):
/// proves binaries bring their libraries.
const DYNAMIC_BINARY: &str = "/usr/bin/zstd";

fn build(dir: &Path, spec: &VersionSpec) -> FixtureVersion {
    let kernel = Kernel::debian_cloud(Arch::native()).unwrap();
    FixtureVersion::build(spec, &kernel, &dir.join(format!("v{}", spec.version))).unwrap()
}

fn slot_disk(dir: &Path, version: &FixtureVersion) -> std::path::PathBuf {
    let path = dir.join("disk.img");
    disk::slot_disk(&path, &version.image, RW_SIZE).unwrap();
    path
}

/// Waits for the host's report on its `number`-th command and checks it
/// succeeded.
fn expect_success(vm: &mut Vm, number: usize) {
    let done = vm.expect(&format!("command={number} exit="), STEP).unwrap();
    assert_eq!(done.field("exit"), Some("0"), "{done}");
}

/// Serves `body` over HTTP on 127.0.0.1 (the guest's 10.0.2.2); reports each
/// request line on the returned channel.
fn http_server(body: &'static str) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (sender, requests) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request_line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Headers end at the first empty line.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = sender.send(request_line.trim().to_owned());
        }
    });
    (port, requests)
}

/// One version on a virtio disk, booted directly from slot b: the marker
/// names the version, its id and the slot; the root is read-only; the rw
/// partition is found by its GPT name and mounted at /rw with /var, /home
/// and /root bound from it (abnix's state directory in place), and keeps what
/// was written when the machine is switched on again; the guest reaches an
/// HTTP server on the host; our own (dynamically linked) updater runs.
#[test]
fn healthy_host_boots_mounts_rw_reaches_the_host_and_keeps_state() {
    let dir = paths::run_dir("healthy-host").unwrap();
    let (port, requests) = http_server("ABNIX-HOST-SAYS-HELLO\n");
    let mut spec = VersionSpec::new(
        7,
        Behaviour::healthy([
            format!("wget -q -O - http://10.0.2.2:{port}/probe"),
            "grep -q ' / ext4 ro' /proc/mounts".to_owned(),
            // abnix-rw at /rw, its directories bound at /var, /home, /root.
            "for m in /rw /var /home /root; do grep -q \" $m ext4 rw\" /proc/mounts || exit 1; done && test -d /var/lib/abnix && test -d /rw/var/lib/abnix".to_owned(),
            "echo boot >>/var/boots && echo boots=$(wc -l </var/boots)".to_owned(),
            "abnix-update --version".to_owned(),
        ]),
    );
    spec.binaries
        .push(workspace::release_binary("abnix-updater", "abnix-update").unwrap());
    let version = build(&dir, &spec);
    let disk = slot_disk(&dir, &version);
    let mut machine = Machine::new(
        "host",
        MachineSpec::new(Firmware::SeaBios).disk(&disk),
        &dir,
    )
    .unwrap();

    let mut vm = machine
        .start(&version.direct_boot(Slot::B), OnReboot::Exit)
        .unwrap();
    let marker = vm.expect("ABNIX-FIXTURE version=", BOOT).unwrap();
    println!(
        "SeaBIOS direct kernel boot to the host's marker: {:.1} s",
        marker.at.as_secs_f64()
    );
    assert_eq!(marker.field("version"), Some("7"));
    assert_eq!(marker.field("id"), Some(spec.id.to_string().as_str()));
    assert_eq!(marker.field("slot"), Some("b"));
    assert_eq!(marker.field("behaviour"), Some("healthy"));
    vm.expect("ABNIX-FIXTURE rw=/dev/vda2", STEP).unwrap();
    vm.expect("ABNIX-FIXTURE network=up", STEP).unwrap();
    vm.expect("ABNIX-HOST-SAYS-HELLO", STEP).unwrap();
    for command in 1..=3 {
        expect_success(&mut vm, command);
    }
    vm.expect("boots=1", STEP).unwrap();
    expect_success(&mut vm, 4);
    expect_success(&mut vm, 5);
    assert!(vm.wait_exit(STEP).unwrap().success());
    assert_eq!(requests.recv_timeout(STEP).unwrap(), "GET /probe HTTP/1.1");

    // Switched on again: same disk, the rw partition remembers.
    let mut vm = machine
        .start(&version.direct_boot(Slot::B), OnReboot::Exit)
        .unwrap();
    vm.expect("ABNIX-FIXTURE version=7", BOOT).unwrap();
    vm.expect("boots=2", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());
}

/// A version whose kernel panics reboots by itself (panic=N), and the test
/// sees consecutive boots on one console.
#[test]
fn kernel_panic_reboots_and_boots_again_in_the_same_process() {
    let dir = paths::run_dir("kernel-panic").unwrap();
    let version = build(&dir, &VersionSpec::new(3, Behaviour::KernelPanic));
    let disk = slot_disk(&dir, &version);
    let mut machine = Machine::new(
        "panic",
        MachineSpec::new(Firmware::SeaBios).disk(&disk),
        &dir,
    )
    .unwrap();
    let mut vm = machine
        .start(&version.direct_boot(Slot::A), OnReboot::Restart)
        .unwrap();

    let first = vm.expect("ABNIX-FIXTURE version=3", BOOT).unwrap();
    assert_eq!(first.field("behaviour"), Some("kernel-panic"));
    assert_eq!(first.field("slot"), Some("a"));
    let panic = vm.expect("Kernel panic - not syncing", STEP).unwrap();
    let second = vm.expect("ABNIX-FIXTURE version=3", BOOT).unwrap();
    println!(
        "boot {:.1} s, panic at {:.1} s, booted again at {:.1} s",
        first.at.as_secs_f64(),
        panic.at.as_secs_f64(),
        second.at.as_secs_f64()
    );
    vm.power_cut().unwrap();
}

/// A never-healthy version reboots after its delay; with OnReboot::Exit that
/// ends the QEMU process cleanly.
#[test]
fn never_healthy_reboots_after_its_delay() {
    let dir = paths::run_dir("never-healthy").unwrap();
    let reboot_after = Duration::from_secs(2);
    let version = build(
        &dir,
        &VersionSpec::new(4, Behaviour::NeverHealthy { reboot_after }),
    );
    let disk = slot_disk(&dir, &version);
    let mut machine = Machine::new(
        "never",
        MachineSpec::new(Firmware::SeaBios).disk(&disk),
        &dir,
    )
    .unwrap();
    let mut vm = machine
        .start(&version.direct_boot(Slot::A), OnReboot::Exit)
        .unwrap();

    let marker = vm.expect("ABNIX-FIXTURE version=4", BOOT).unwrap();
    assert_eq!(marker.field("behaviour"), Some("never-healthy"));
    vm.expect("never healthy: rebooting in 2 s", STEP).unwrap();
    let status = vm.wait_exit(STEP).unwrap();
    assert!(status.success(), "{status}");
    assert!(vm.elapsed() >= marker.at + reboot_after);
}

/// power_cut_when kills QEMU the moment the line appears: the guest gets
/// no further (it was about to sleep 5 s, then print); what it had synced
/// to the rw partition survives and the disk boots again.
#[test]
fn power_cut_kills_at_once_and_the_disk_boots_again() {
    let dir = paths::run_dir("power-cut").unwrap();
    let spec = VersionSpec::new(
        5,
        Behaviour::Healthy {
            commands: vec![
                "echo cut >>/var/cuts && sync && echo cuts=$(wc -l </var/cuts)".to_owned(),
                "sleep 5".to_owned(),
            ],
            then: AfterCommands::Idle,
        },
    );
    let version = build(&dir, &spec);
    let disk = slot_disk(&dir, &version);
    let mut machine =
        Machine::new("cut", MachineSpec::new(Firmware::SeaBios).disk(&disk), &dir).unwrap();

    let mut vm = machine
        .start(&version.direct_boot(Slot::A), OnReboot::Restart)
        .unwrap();
    let line = vm.power_cut_when("cuts=1", BOOT).unwrap();
    let latency = vm.elapsed() - line.at;
    println!(
        "power cut {:.0} ms after the line was printed",
        latency.as_secs_f64() * 1000.0
    );
    let status = vm.wait_exit(Duration::ZERO).unwrap();
    assert_eq!(status.signal(), Some(9), "{status}");
    let transcript = std::fs::read_to_string(vm.log_path()).unwrap();
    assert!(!transcript.contains("command=2 exit"), "{transcript}");

    let mut vm = machine
        .start(&version.direct_boot(Slot::A), OnReboot::Restart)
        .unwrap();
    vm.expect("cuts=2", BOOT).unwrap();
    vm.power_cut().unwrap();
}

/// OVMF, with the machine's own UEFI variable store, boots from the disk:
/// finding no bootloader on the ESP it falls back to its internal shell,
/// whose startup.nsh starts the fixture kernel (EFI stub) with its initrd
/// and command line from the ESP.
#[test]
fn ovmf_boots_a_fixture_from_the_esp_of_its_disk() {
    let dir = paths::run_dir("ovmf").unwrap();
    let version = build(&dir, &VersionSpec::new(6, Behaviour::healthy(["true"])));
    let startup = dir.join("startup.nsh");
    std::fs::write(
        &startup,
        format!(
            "fs0:\r\n\\vmlinuz initrd=\\initrd {} abnix.slot=b\r\n",
            version.cmdline
        ),
    )
    .unwrap();
    let esp = dir.join("esp.vfat");
    fat_image(
        &esp,
        &[
            (&version.kernel, "vmlinuz"),
            (&version.initrd, "initrd"),
            (&startup, "startup.nsh"),
        ],
    );
    let disk = dir.join("disk.img");
    disk::gpt_disk(
        &disk,
        &[
            Partition {
                name: "abnix-esp".to_owned(),
                kind: PartitionType::EfiSystem,
                image: esp,
            },
            Partition {
                name: "abnix-b".to_owned(),
                kind: PartitionType::LinuxRootX86_64,
                image: version.image.clone(),
            },
        ],
    )
    .unwrap();
    let mut machine =
        Machine::new("uefi", MachineSpec::new(Firmware::Ovmf).disk(&disk), &dir).unwrap();
    let mut vm = machine.start(&Boot::Firmware, OnReboot::Exit).unwrap();
    let marker = vm.expect("ABNIX-FIXTURE version=6", BOOT).unwrap();
    println!(
        "OVMF → UEFI shell (5 s countdown) → fixture marker: {:.1} s",
        marker.at.as_secs_f64()
    );
    assert_eq!(marker.field("slot"), Some("b"));
    vm.expect("command=1 exit=0", STEP).unwrap();
    assert!(vm.wait_exit(STEP).unwrap().success());
}

/// A FAT filesystem image holding `files` (host file, name in the root).
fn fat_image(path: &Path, files: &[(&Path, &str)]) {
    let size_kib = 48 * 1024;
    let mkfs = Command::new("mkfs.vfat")
        .arg("-C")
        .arg(path)
        .arg(size_kib.to_string())
        .output()
        .expect("mkfs.vfat is installed (apt-get install dosfstools)");
    assert!(
        mkfs.status.success(),
        "{}",
        String::from_utf8_lossy(&mkfs.stderr)
    );
    for (host, name) in files {
        let mcopy = Command::new("mcopy")
            .arg("-i")
            .arg(path)
            .arg(host)
            .arg(format!("::/{name}"))
            .output()
            .expect("mcopy is installed (apt-get install mtools)");
        assert!(
            mcopy.status.success(),
            "{}",
            String::from_utf8_lossy(&mcopy.stderr)
        );
    }
}

/// SeaBIOS boots the first virtio disk through its MBR: a boot sector that
/// writes a line to the serial port (COM1) and halts.
#[test]
fn seabios_boots_the_mbr_of_the_first_disk() {
    let dir = paths::run_dir("seabios-mbr").unwrap();
    #[rustfmt::skip]
    let code: &[u8] = &[
        0xfc,                   // cld
        0x31, 0xc0,             // xor ax, ax
        0x8e, 0xd8,             // mov ds, ax
        0xbe, 0x17, 0x7c,       // mov si, 0x7c17 (the message)
        0xba, 0xf8, 0x03,       // mov dx, 0x3f8 (COM1)
        0xac,                   // next: lodsb
        0x84, 0xc0,             //   test al, al
        0x74, 0x03,             //   jz halt
        0xee,                   //   out dx, al
        0xeb, 0xf8,             //   jmp next
        0xfa,                   // halt: cli
        0xf4,                   //   hlt
        0xeb, 0xfd,             //   jmp halt + 1
    ];
    let mut sector = [0u8; 512];
    sector[..code.len()].copy_from_slice(code);
    let message = b"ABNIX-MBR-BOOTED\r\n\0";
    sector[code.len()..code.len() + message.len()].copy_from_slice(message);
    sector[510..].copy_from_slice(&[0x55, 0xaa]);
    let disk = dir.join("mbr.img");
    let mut image = sector.to_vec();
    image.resize(1 << 20, 0);
    std::fs::write(&disk, image).unwrap();

    let spec = MachineSpec::new(Firmware::SeaBios).disk(&disk);
    let mut machine = Machine::new("bios", spec, &dir).unwrap();
    let mut vm = machine.start(&Boot::Firmware, OnReboot::Exit).unwrap();
    let line = vm.expect("ABNIX-MBR-BOOTED", BOOT).unwrap();
    println!("SeaBIOS → MBR boot code: {:.1} s", line.at.as_secs_f64());
    vm.power_cut().unwrap();
}

/// The installer environment runs its command with the binaries and files
/// it was given, against an empty virtio disk, and powers off; what it wrote
/// is in the disk-image file.
#[test]
fn installer_environment_runs_its_command_and_powers_off() {
    let dir = paths::run_dir("installer-env").unwrap();
    let kernel = Kernel::debian_cloud(Arch::native()).unwrap();
    let payload = dir.join("bundle");
    std::fs::create_dir(&payload).unwrap();
    std::fs::write(payload.join("payload"), "ABNIX-PAYLOAD-ON-DISK").unwrap();
    let env = InstallerEnv {
        command: "zstd --version && dd if=/bundle/payload of=/dev/vda conv=notrunc".to_owned(),
        binaries: vec![DYNAMIC_BINARY.into()],
        directories: vec![(payload, "bundle".to_owned())],
    };
    let initrd = dir.join("installer.cpio");
    initramfs::installer_initramfs(&kernel, &env, &initrd).unwrap();
    let empty = dir.join("empty.img");
    std::fs::File::create(&empty)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut machine = Machine::new(
        "installer",
        MachineSpec::new(Firmware::SeaBios).disk(&empty),
        &dir,
    )
    .unwrap();

    let started = Instant::now();
    let boot = Boot::Kernel {
        kernel: kernel.image.clone(),
        initrd,
        cmdline: "console=ttyS0 quiet panic=1".to_owned(),
    };
    let mut vm = machine.start(&boot, OnReboot::Exit).unwrap();
    let done = vm.expect("ABNIX-INSTALLER exit=", BOOT).unwrap();
    assert_eq!(done.field("exit"), Some("0"), "{done}");
    assert!(vm.wait_exit(STEP).unwrap().success());
    println!(
        "installer environment ran and powered off in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let written = std::fs::read(&empty).unwrap();
    assert!(written.starts_with(b"ABNIX-PAYLOAD-ON-DISK"));
}
