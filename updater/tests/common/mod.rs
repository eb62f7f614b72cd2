//! Helpers of the device tests: versions packed from real ext4 images, a
//! sparse disk-image file installed by the installer (core::install), a
//! real S3 server (s3s-fs) behind a fault proxy, and a device config
//! pointing at it.

#![allow(dead_code)] // each test file uses its own part of the helpers

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use abnix_core::blockdev::SysRoot;
use abnix_core::boot::Bootloader;
use abnix_core::boot::BootloaderSetup;
use abnix_core::boot::{model, BootControl};
use abnix_core::bundle::Bundle;
use abnix_core::pack::{pack, PackInput};
use abnix_core::progress::NoProgress;
use abnix_core::system_disk::SystemDisk;
use abnix_formats::layout::Arch;
use abnix_formats::layout::{min_disk_size, LayoutConfig};
use abnix_formats::meta::{object_name, Meta, ObjectKind, Publication, SignedMeta};
use abnix_formats::sign::SecretKey;
use abnix_formats::slot::Slot;
use abnix_installer::install::{prepare, Request, TargetRequest};
use abnix_testkit::{credentials_file, FaultProxy, S3Server};
use abnix_updater::channel::Channel;
use abnix_updater::publish::{publish, PublishOptions};
use abnix_updater::remote::{
    CredentialSource, Remote, RemoteConfig, RetryPolicy, Timeouts, TransferLimits,
};
use abnix_updater::state_dir::{Lock, StateDir};
use chrono::{DateTime, Utc};
use tempfile::TempDir;
use uuid::Uuid;

pub const MIB: u64 = 1 << 20;
pub const SLOT_SIZE: u64 = 16 * MIB;
/// The smallest FAT32 with 512-byte clusters abnix formats is about 33 MiB.
const ESP_SIZE: u64 = 40 * MIB;
pub const PREFIX: &str = "fleet";
pub const CHANNEL: &str = "kiosk";

/// The bucket, the signing key and a scratch directory.
pub struct Fleet {
    pub dir: TempDir,
    pub server: S3Server,
    /// What devices talk to; uploads go to the server directly, so the
    /// proxy sees only the devices' requests.
    pub proxy: FaultProxy,
    pub key: SecretKey,
    credentials: PathBuf,
    uploader: Remote,
}

/// A packed, verified version (a bundle directory), and the key that signed
/// it, which signs it for the channel when it is published.
pub struct Version {
    pub bundle: Bundle,
    pub key: SecretKey,
}

impl Version {
    pub fn number(&self) -> u64 {
        self.bundle.signed.meta().version
    }

    pub fn meta(&self) -> &Meta {
        self.bundle.signed.meta()
    }

    pub fn id(&self) -> Uuid {
        self.bundle.signed.meta().id
    }

    pub fn image_object(&self) -> String {
        self.bundle.signed.meta().image.object.clone()
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let server = S3Server::start();
        let proxy = FaultProxy::start(server.addr());
        let credentials = credentials_file(dir.path(), &server);
        let uploader = Remote::new(RemoteConfig {
            endpoint: Some(server.endpoint()),
            region: "us-east-1".into(),
            bucket: server.bucket().into(),
            prefix: PREFIX.into(),
            channel: CHANNEL.into(),
            path_style: true,
            credentials: CredentialSource::File(credentials.clone()),
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            limits: TransferLimits::default(),
        })
        .unwrap();
        Fleet {
            dir,
            server,
            proxy,
            key: SecretKey::generate("fleet-test").unwrap(),
            credentials,
            uploader,
        }
    }

    /// Version `number` with an ext4 image of `image_size` bytes, signed
    /// with the fleet's key.
    pub fn version(&self, number: u64, image_size: u64) -> Version {
        self.version_signed_with(number, image_size, &self.key)
    }

    pub fn version_signed_with(&self, number: u64, image_size: u64, key: &SecretKey) -> Version {
        self.build_version(number, image_size, key, &[], Arch::X86_64)
    }

    /// Version `number` built for `arch` machines.
    pub fn version_for(&self, number: u64, arch: Arch) -> Version {
        self.build_version(number, 8 * MIB, &self.key, &[], arch)
    }

    /// Version `number` whose image also holds `files` (path in the tree,
    /// contents): content shared with other versions, for delta updates.
    pub fn version_with_files(
        &self,
        number: u64,
        image_size: u64,
        files: &[(&str, &[u8])],
    ) -> Version {
        self.build_version(number, image_size, &self.key, files, Arch::X86_64)
    }

    fn build_version(
        &self,
        number: u64,
        image_size: u64,
        key: &SecretKey,
        files: &[(&str, &[u8])],
        arch: Arch,
    ) -> Version {
        let id = Uuid::new_v4();
        let work = self.dir.path().join(format!("v{number}-{id}"));
        fs::create_dir_all(&work).unwrap();
        let image = ext4_image(&work, id, number, image_size, files);
        let kernel = work.join("kernel");
        let initrd = work.join("initrd");
        fs::write(
            &kernel,
            format!("MZ kernel of version {number}\n").repeat(300),
        )
        .unwrap();
        fs::write(&initrd, format!("initrd of version {number}\n").repeat(900)).unwrap();
        let mut input = PackInput::new(
            &image,
            &kernel,
            &initrd,
            format!("console=ttyS0 root=UUID={id} quiet"),
            number,
            format!("kiosk {number}"),
            key,
        );
        input.arch = arch;
        let out = work.join("bundle");
        pack(&input, &out, &NoProgress).unwrap();
        Version {
            bundle: Bundle::open(&out, &self.trusted_keys(key)).unwrap(),
            key: key.clone(),
        }
    }

    pub fn trusted_keys(&self, key: &SecretKey) -> abnix_formats::sign::TrustedKeys {
        let mut keys = abnix_formats::sign::TrustedKeys::new();
        keys.insert(key.public());
        keys
    }

    /// Publishes a version with core's `publish`, signed for the channel by
    /// the key that packed it, valid for its default month; over whatever
    /// the channel holds (`force`), as the tests set up the bucket at will.
    pub fn publish(&self, version: &Version) {
        self.publish_with(
            version,
            &PublishOptions {
                force: true,
                ..PublishOptions::default()
            },
        );
    }

    /// Publishes a version with `opts`, signed by the key that packed it.
    pub fn publish_with(&self, version: &Version, opts: &PublishOptions) {
        let channel = Channel::new(self.uploader.clone(), self.trusted_keys(&version.key));
        publish(
            &channel,
            &version.bundle,
            &[&version.key],
            opts,
            &NoProgress,
        )
        .unwrap();
    }

    /// Publishes a version to another channel of the bucket.
    pub fn publish_with_channel(&self, version: &Version, channel: &str) {
        let channel = self.other_channel(channel, &version.key);
        publish(
            &channel,
            &version.bundle,
            &[&version.key],
            &PublishOptions::default(),
            &NoProgress,
        )
        .unwrap();
    }

    /// The channel as the operator sees it, trusting `key`.
    pub fn channel(&self, key: &SecretKey) -> Channel {
        Channel::new(self.uploader.clone(), self.trusted_keys(key))
    }

    /// Another channel of the bucket, as the operator sees it.
    pub fn other_channel(&self, name: &str, key: &SecretKey) -> Channel {
        let config = RemoteConfig {
            channel: name.into(),
            ..self.uploader.config().clone()
        };
        Channel::new(Remote::new(config).unwrap(), self.trusted_keys(key))
    }

    /// `meta` published for the channel `channel`, valid for `valid_for`
    /// from now, signed by `keys`: what `publish` signs, or what someone
    /// holding those keys signs.
    pub fn sign_for(
        &self,
        meta: &Meta,
        channel: &str,
        valid_for: Duration,
        keys: &[&SecretKey],
    ) -> SignedMeta {
        let signed_at = DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap();
        let published = Meta {
            published: Some(Publication {
                channel: channel.into(),
                signed_at,
                expires: signed_at + chrono::Duration::from_std(valid_for).unwrap(),
                revoked_keys: Vec::new(),
                rollout: None,
            }),
            ..meta.clone()
        };
        SignedMeta::sign(published, keys).unwrap()
    }

    /// Makes `meta_bytes` with `signatures` the channel's meta, with its
    /// version's `.meta` and `.meta.sig` objects, as whoever writes to the
    /// bucket can.
    pub fn put_pointer(&self, meta_bytes: &[u8], signatures: &[u8]) {
        let meta = Meta::parse(meta_bytes).unwrap();
        let config = self.uploader.config();
        let put = |name: String, bytes: &[u8]| {
            self.uploader
                .put_bytes(&config.object_key(&name), bytes)
                .unwrap()
        };
        put(
            object_name(meta.version, meta.id, ObjectKind::MetaSig),
            signatures,
        );
        put(
            object_name(meta.version, meta.id, ObjectKind::Meta),
            meta_bytes,
        );
        self.uploader
            .put_bytes(&config.channel_meta_key(), meta_bytes)
            .unwrap();
    }

    /// Where s3s-fs keeps the object `name` of channel `channel`.
    pub fn channel_object_file(&self, channel: &str, name: &str) -> PathBuf {
        self.server
            .object_path(&format!("{PREFIX}/{channel}/{name}"))
    }

    /// The channel's meta, as s3s-fs keeps it.
    pub fn pointer_file(&self) -> PathBuf {
        self.server
            .object_path(&self.uploader.config().channel_meta_key())
    }

    /// Where s3s-fs keeps a version's object, to corrupt it in place.
    pub fn object_file(&self, object: &str) -> PathBuf {
        self.server
            .object_path(&self.uploader.config().object_key(object))
    }

    pub fn public_key(&self) -> String {
        self.key.public().to_string()
    }
}

/// An ext4 image of `size` bytes with filesystem UUID `id`, holding a file
/// that differs per version, and `files`.
fn ext4_image(dir: &Path, id: Uuid, number: u64, size: u64, files: &[(&str, &[u8])]) -> PathBuf {
    let tree = dir.join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    for (path, contents) in files {
        let path = tree.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, contents).unwrap();
    }
    let text: String = (0..20_000)
        .map(|i| format!("version {number} line {i}\n"))
        .collect();
    fs::write(tree.join("etc/version.txt"), text).unwrap();
    let image = dir.join("root.ext4");
    File::create(&image).unwrap().set_len(size).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-U", &id.to_string(), "-d"])
        .arg(&tree)
        .arg(&image)
        .output()
        .expect("running mkfs.ext4 (install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// A device: its disk image, its config and its state directory.
pub struct Device {
    pub dir: TempDir,
    pub disk: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

/// What a test device's config says.
pub struct DeviceOptions<'a> {
    pub endpoint: String,
    pub trusted_key: String,
    pub reboot: &'a str,
    pub reboot_window: Option<String>,
    pub bootloader: Bootloader,
}

impl Device {
    /// A disk with `version` installed in slot A by the installer
    /// (core::install, as `abnix-install --file` runs it), with GRUB.
    pub fn install(fleet: &Fleet, version: &Version, reboot: &str) -> Device {
        Device::install_with(
            fleet,
            version,
            &DeviceOptions {
                endpoint: fleet.proxy.endpoint(),
                trusted_key: fleet.public_key(),
                reboot,
                reboot_window: None,
                bootloader: Bootloader::Grub,
            },
        )
    }

    /// Like [`Device::install`] with reboot policy `never`, booting through
    /// `bootloader`.
    pub fn install_booting(fleet: &Fleet, version: &Version, bootloader: Bootloader) -> Device {
        Device::install_with(
            fleet,
            version,
            &DeviceOptions {
                endpoint: fleet.proxy.endpoint(),
                trusted_key: fleet.public_key(),
                reboot: "never",
                reboot_window: None,
                bootloader,
            },
        )
    }

    pub fn install_with(fleet: &Fleet, version: &Version, options: &DeviceOptions) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let disk_path = dir.path().join("disk.img");
        let layout = LayoutConfig {
            esp_size: ESP_SIZE,
            min_rw_size: 16 * MIB,
            ..LayoutConfig::new(SLOT_SIZE)
        };
        let bootloader = match options.bootloader {
            Bootloader::Grub => BootloaderSetup::Grub {
                mkimage: "grub-mkimage".into(),
                bios_dir: Some("/usr/lib/grub/i386-pc".into()),
                efi_dir: "/usr/lib/grub/x86_64-efi".into(),
            },
            Bootloader::SystemdBoot => BootloaderSetup::SystemdBoot {
                efi: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
            },
        };
        let request = Request {
            bundle: version.bundle.dir.clone(),
            trusted_keys: fleet.trusted_keys(&fleet.key),
            target: TargetRequest::File {
                path: disk_path.clone(),
                size: min_disk_size(512, &layout),
            },
            layout,
            bootloader,
            wipe: false,
            allow_removable: false,
            seed: Some([7; 32]),
        };
        prepare(&request, &SysRoot::default())
            .unwrap()
            .install(&NoProgress)
            .unwrap();

        let state_dir = dir.path().join("state");
        let config_path = dir.path().join("config.toml");
        let window = options
            .reboot_window
            .as_ref()
            .map(|w| format!("reboot_window = \"{w}\"\n"))
            .unwrap_or_default();
        fs::write(
            &config_path,
            window
                + &format!(
                "endpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{}\"\nprefix = \"{PREFIX}\"\n\
                 channel = \"{CHANNEL}\"\npath_style = true\ncredentials = \"{}\"\n\
                 trusted_keys = [\"{}\"]\ntries = 3\nreboot = \"{}\"\nstate_dir = \"{}\"\n",
                options.endpoint,
                fleet.server.bucket(),
                fleet.credentials.display(),
                options.trusted_key,
                options.reboot,
                    state_dir.display()
                ),
        )
        .unwrap();
        Device {
            disk: disk_path,
            config: config_path,
            state_dir,
            dir,
        }
    }

    /// `abnix-update COMMAND ARGS --config … --disk … --cmdline "… abnix.slot=SLOT"`:
    /// the device as booted from `slot`.
    pub fn command(&self, slot: Slot, command: &str, args: &[&str]) -> Command {
        self.command_with_cmdline(
            &format!("console=ttyS0 quiet abnix.slot={slot}"),
            command,
            args,
        )
    }

    /// The device as booted with kernel command line `cmdline`.
    pub fn command_with_cmdline(&self, cmdline: &str, command: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_abnix-update"));
        cmd.arg(command)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .arg("--disk")
            .arg(&self.disk)
            .arg("--cmdline")
            .arg(cmdline);
        let machine_id = self.machine_id_file();
        if machine_id.exists() {
            cmd.arg("--machine-id").arg(machine_id);
        }
        cmd
    }

    /// The device's `/etc/machine-id`, once [`Device::set_machine_id`]
    /// wrote it (until then the test machine's own).
    pub fn machine_id_file(&self) -> PathBuf {
        self.dir.path().join("machine-id")
    }

    pub fn set_machine_id(&self, id: &str) {
        fs::write(self.machine_id_file(), format!("{id}\n")).unwrap();
    }

    pub fn run(&self, slot: Slot, command: &str, args: &[&str]) -> Output {
        self.command(slot, command, args)
            .output()
            .expect("running abnix-update")
    }

    /// `status --json` as booted from `slot`.
    pub fn status(&self, slot: Slot) -> serde_json::Value {
        let out = self.run(slot, "status", &["--json"]);
        assert_exit(&out, 0);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Each slot's (state, version) from `status`.
    pub fn slots(&self, slot: Slot) -> [(String, Option<u64>); 2] {
        let status = self.status(slot);
        [0, 1].map(|i| {
            let s = &status["slots"][i];
            (
                s["state"].as_str().unwrap().to_owned(),
                s["version"].as_u64(),
            )
        })
    }

    /// Each slot's (state, version, boots next) from `status`.
    pub fn slots_next(&self, booted: Slot) -> Vec<(String, Option<u64>, bool)> {
        let status = self.status(booted);
        (0..2)
            .map(|i| {
                let s = &status["slots"][i];
                (
                    s["state"].as_str().unwrap().to_owned(),
                    s["version"].as_u64(),
                    s["boots_next"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    /// Boot control of the disk, as a test sees it (e.g. to simulate what the
    /// bootloader does at power-on).
    pub fn with_boot<R>(&self, op: impl FnOnce(&mut dyn BootControl) -> R) -> R {
        let file = File::options()
            .read(true)
            .write(true)
            .open(&self.disk)
            .unwrap();
        let mut disk = SystemDisk::open(file, 512).unwrap();
        let mut boot = disk.boot_control().unwrap();
        op(boot.as_mut())
    }

    /// What the bootloader does at power-on, as the boot tests model it
    /// (checked against the real bootloaders in QEMU): GRUB picks the slot
    /// and saves a trial's decremented tries in grubenv; systemd-boot picks
    /// the first entry and renames a counted one. Returns the slot that
    /// boots.
    pub fn power_on(&self) -> Slot {
        let file = File::options()
            .read(true)
            .write(true)
            .open(&self.disk)
            .unwrap();
        let mut disk = SystemDisk::open(file, 512).unwrap();
        let status = disk.boot_control().unwrap().status().unwrap();
        let slot = status.next.expect("a slot boots");
        let bootloader = disk.bootloader().unwrap();
        let booted = model::power_on(disk.esp(), bootloader, &status).unwrap();
        assert_eq!(
            booted,
            Some(slot),
            "the bootloader's model agrees with status"
        );
        slot
    }

    /// Sets `key = value` (a TOML value) in the device's config, replacing
    /// the key's line if it has one.
    pub fn set_config(&self, key: &str, value: &str) {
        let text = fs::read_to_string(&self.config).unwrap();
        let prefix = format!("{key} =");
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with(&prefix)).collect();
        let line = format!("{key} = {value}");
        lines.push(&line);
        fs::write(&self.config, lines.join("\n") + "\n").unwrap();
    }

    /// The SHA-256 of slot `slot`'s partition: whether an update touched it.
    pub fn slot_digest(&self, slot: Slot) -> abnix_formats::digest::Digest {
        use std::io::Read;
        let mut disk = SystemDisk::open(File::open(&self.disk).unwrap(), 512).unwrap();
        let mut bytes = Vec::new();
        disk.slot_region(slot).read_to_end(&mut bytes).unwrap();
        abnix_formats::digest::Digest::of(&bytes)
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// Holds the update lock, as a running update does.
    pub fn hold_lock(&self) -> Lock {
        StateDir::new(&self.state_dir)
            .lock(std::time::Duration::ZERO)
            .unwrap()
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The command exited with `code` and printed `text` on stdout.
pub fn assert_exit_saying(out: &Output, code: i32, text: &str) {
    assert_exit(out, code);
    assert!(
        stdout(out).contains(text),
        "{text:?} not in stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}
