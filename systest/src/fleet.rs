//! A fleet for machines that update themselves: a real S3 server (`s3s-fs`
//! on 127.0.0.1, which guests reach at 10.0.2.2 through QEMU's user
//! network), the operator's signing key, one channel, and releases built
//! as fixture versions, packed with the project's own `pack` and published
//! with the project's own `abnix-update publish`; busybox hosts
//! ([`crate::version`]) or systemd hosts ([`crate::systemd_host`]).
//!
//! Every host of the fleet carries the same device config (the bucket, the
//! channel, the trusted key, tries and reboot policy) and a credentials
//! file, so the real `abnix-update update` inside a guest signs its requests
//! and verifies what it downloads exactly as on a real machine.
//! The updater's executor on the host side reaches the same bucket
//! ([`Fleet::host_config`]) when a test updates a disk file
//! ([`crate::system_disk`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use abnix_formats::index::Index;
use abnix_formats::meta::SignedMeta;
use abnix_formats::sign::{PublicKey, SecretKey};
use abnix_testkit::S3Server;
use abnix_updater::channel::Channel;
use abnix_updater::config::Config;
use abnix_updater::remote::Remote;
use anyhow::{ensure, Context, Result};

use crate::bundle::pack_fixture;
use crate::kernel::Kernel;
use crate::systemd_host::{self, HostSpec, CHECK_INTERVAL};
use crate::version::{FixtureFile, FixtureVersion, VersionSpec};
use crate::workspace;

/// The bucket's key prefix; channels live under it.
const PREFIX: &str = "fleet";
/// Where a host keeps its bucket credentials (mode 0600, as the updater
/// demands).
const GUEST_CREDENTIALS: &str = "/etc/abnix/credentials.toml";
/// Where a reporting host keeps the credentials it writes its reports with.
const GUEST_REPORT_CREDENTIALS: &str = "/etc/abnix/report-credentials.toml";
/// Bytes of pseudo-random content every version shares, and bytes of
/// content that differ between versions (`/usr/share/fixture/`): an update
/// then has something to reuse and something to download, as a real one
/// does, and the image write takes long enough to be cut short.
const SHARED_PAYLOAD: usize = 6 << 20;
const OWN_PAYLOAD: usize = 1 << 20;

/// How the fleet's hosts update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Boot attempts of a trial version (`tries`).
    pub tries: u32,
}

/// A version of the fleet: its fixture, its signed bundle, its meta.
#[derive(Debug, Clone)]
pub struct Release {
    pub version: FixtureVersion,
    pub bundle: PathBuf,
    pub meta: SignedMeta,
    /// The key that signed it, and its secret key file, which `publish`
    /// signs the channel's meta with.
    pub signer: PublicKey,
    pub key_file: PathBuf,
}

/// The bucket, the key and the channel of one fleet; the server stops when
/// the fleet is dropped.
pub struct Fleet {
    server: S3Server,
    channel: String,
    dir: PathBuf,
    key: SecretKey,
    /// The signing key's file (mode 0600), for `publish`.
    key_file: PathBuf,
    policy: Policy,
    updater: PathBuf,
    /// The operator's credentials file (mode 0600), for `publish`.
    credentials: PathBuf,
    /// Whether the hosts write reports ([`Fleet::report_hosts`]).
    reports: bool,
}

impl Fleet {
    /// Starts the bucket and makes the signing key; files go under `dir`.
    pub fn start(dir: &Path, channel: &str, policy: Policy) -> Result<Fleet> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let server = S3Server::start();
        let credentials = dir.join("operator-credentials.toml");
        write_secret(&credentials, &credentials_toml(&server))?;
        let key = SecretKey::generate("abnix-fleet")?;
        let key_file = dir.join("fleet.key");
        write_secret(&key_file, &key.to_string())?;
        Ok(Fleet {
            channel: channel.to_owned(),
            dir: dir.to_owned(),
            key,
            key_file,
            policy,
            updater: workspace::release_binary("abnix-updater", "abnix-update")?,
            credentials,
            server,
            reports: false,
        })
    }

    /// The fleet's hosts write reports (`report = true`, with credentials
    /// of their own) and carry an empty `/etc/machine-id`, which the
    /// fixture's `/init` binds the machine's SMBIOS UUID over (its machine
    /// id). Only for versions built after this.
    pub fn report_hosts(&mut self) {
        self.reports = true;
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// `/etc/abnix/config.toml` of the fleet's hosts, checked with the
    /// parser the updater uses. `reboot = "immediate"`: a host reboots into
    /// a new version as soon as it is installed. `check_interval` is the
    /// systemd hosts' timer's (busybox hosts check in a loop, faster).
    pub fn device_config(&self) -> Result<String> {
        let endpoint = format!("http://10.0.2.2:{}", self.server.addr().port());
        let text = self.config_text(&endpoint, Path::new(GUEST_CREDENTIALS));
        Config::parse(&text, Path::new("config.toml")).context("the fleet's device config")?;
        Ok(text)
    }

    /// The device config as a program on this machine reaches the bucket
    /// (127.0.0.1, the operator's credentials): what the updater's executor
    /// runs with when a test updates a disk from the host side.
    pub fn host_config(&self) -> Result<Config> {
        let text = self.config_text(&self.server.endpoint(), &self.credentials);
        Config::parse(&text, Path::new("config.toml")).context("the fleet's host-side config")
    }

    fn config_text(&self, endpoint: &str, credentials: &Path) -> String {
        let reports = match self.reports {
            true => format!("report = true\nreport_credentials = \"{GUEST_REPORT_CREDENTIALS}\"\n"),
            false => String::new(),
        };
        format!(
            "endpoint = \"{endpoint}\"\n\
             region = \"us-east-1\"\n\
             bucket = \"{bucket}\"\n\
             prefix = \"{PREFIX}\"\n\
             channel = \"{channel}\"\n\
             path_style = true\n\
             credentials = \"{credentials}\"\n\
             trusted_keys = [\"{key}\"]\n\
             tries = {tries}\n\
             reboot = \"immediate\"\n\
             check_interval = \"{CHECK_INTERVAL}\"\n\
             state_dir = \"/var/lib/abnix\"\n\
             {reports}",
            bucket = self.server.bucket(),
            channel = self.channel,
            credentials = credentials.display(),
            key = self.public_key(),
            tries = self.policy.tries,
        )
    }

    /// The channel's meta, verified with the fleet's key: after
    /// [`Fleet::publish`], the release as the channel signed it.
    pub fn channel_meta(&self) -> Result<SignedMeta> {
        let config = self.host_config()?;
        let remote = Remote::new(config.bucket()?.clone()).context("the fleet's bucket")?;
        Channel::new(remote, config.trusted_keys)
            .latest()
            .with_context(|| format!("reading the meta of channel {}", self.channel))
    }

    /// Builds version `spec` as a host of this fleet (the updater, the
    /// device config, the credentials, the shared and own payload) and packs
    /// it into a signed bundle under the fleet's directory.
    pub fn release(&self, mut spec: VersionSpec, kernel: &Kernel) -> Result<Release> {
        let dir = self
            .dir
            .join(format!("v{}-{}", spec.version, spec.behaviour.name()));
        spec.binaries.push(self.updater.clone());
        spec.files.extend(self.host_files()?);
        spec.files.extend([
            FixtureFile::new(
                "/usr/share/fixture/shared",
                0o644,
                abnix_testkit::images::seeded_random(SHARED_PAYLOAD, 0),
            ),
            FixtureFile::new(
                "/usr/share/fixture/own",
                0o644,
                abnix_testkit::images::seeded_random(OWN_PAYLOAD, spec.version),
            ),
        ]);
        let version = FixtureVersion::build(&spec, kernel, &dir)?;
        self.pack(version, &dir)
    }

    /// Builds version `spec` of a systemd host ([`systemd_host`]) of this
    /// fleet (with the device config and the credentials) and packs it.
    pub fn release_systemd_host(&self, mut spec: HostSpec, kernel: &Kernel) -> Result<Release> {
        let dir = self.dir.join(format!(
            "v{}-systemd-{}-{}",
            spec.version,
            spec.host.health.name(),
            spec.host.fs.name()
        ));
        spec.files.extend(self.host_files()?);
        let version = systemd_host::build(&spec, kernel, &dir)?;
        self.pack(version, &dir)
    }

    /// The files every host of the fleet carries: its device config and
    /// its bucket credentials; a reporting host its report credentials (the
    /// same key: s3s-fs has no policies) and its `/etc/machine-id`.
    fn host_files(&self) -> Result<Vec<FixtureFile>> {
        let mut files = vec![
            FixtureFile::new("/etc/abnix/config.toml", 0o644, self.device_config()?),
            FixtureFile::new(GUEST_CREDENTIALS, 0o600, credentials_toml(&self.server)),
        ];
        if self.reports {
            files.extend([
                FixtureFile::new(
                    GUEST_REPORT_CREDENTIALS,
                    0o600,
                    credentials_toml(&self.server),
                ),
                FixtureFile::new("/etc/machine-id", 0o444, String::new()),
            ]);
        }
        Ok(files)
    }

    /// Packs `version`, built elsewhere, into a bundle in `dir` signed with
    /// the fleet's key.
    pub fn pack(&self, version: FixtureVersion, dir: &Path) -> Result<Release> {
        let bundle = dir.join("bundle");
        let meta = pack_fixture(&version, &self.key, &bundle)?;
        Ok(Release {
            version,
            bundle,
            meta,
            signer: self.public_key(),
            key_file: self.key_file.clone(),
        })
    }

    /// The same version signed by a key the hosts do not trust.
    pub fn signed_by_stranger(&self, release: &Release) -> Result<Release> {
        let stranger = SecretKey::generate("stranger")?;
        let bundle = release.bundle.with_file_name("bundle-by-stranger");
        let meta = pack_fixture(&release.version, &stranger, &bundle)?;
        let key_file = release.bundle.with_file_name("stranger.key");
        write_secret(&key_file, &stranger.to_string())?;
        Ok(Release {
            version: release.version.clone(),
            bundle,
            meta,
            signer: stranger.public(),
            key_file,
        })
    }

    /// Publishes `release` with `abnix-update publish`, as whoever holds
    /// its signing key: the bundle is checked against that key, which signs
    /// it for the channel. `force` publishes over a newer channel meta, or
    /// one that key does not verify (what an operator does on purpose, or
    /// an intruder would).
    pub fn publish(&self, release: &Release, force: bool) -> Result<()> {
        self.publish_on(&self.channel, release, force)
    }

    /// Publishes `release` on `channel` of the same bucket (see
    /// [`Fleet::publish`]).
    pub fn publish_on(&self, channel: &str, release: &Release, force: bool) -> Result<()> {
        let mut args = vec!["--bundle".into(), release.bundle.display().to_string()];
        if force {
            args.push("--force".into());
        }
        self.publish_as(channel, &release.key_file, &release.signer, &args)
            .with_context(|| format!("publishing version {}", release.meta.meta().version))?;
        Ok(())
    }

    /// Runs `abnix-update publish ARGS` on the fleet's channel as its
    /// operator (the fleet's key): `--bundle DIR --rollout-over D`,
    /// `--resign`, `--halt`, `--revert-to N`. Returns what it printed.
    pub fn publish_with(&self, args: &[String]) -> Result<String> {
        self.publish_as(&self.channel, &self.key_file, &self.public_key(), args)
    }

    fn publish_as(
        &self,
        channel: &str,
        key_file: &Path,
        signer: &PublicKey,
        args: &[String],
    ) -> Result<String> {
        let mut publish = self.operator_command("publish", channel, signer);
        publish.arg("--key").arg(key_file).args(args);
        run_operator(&mut publish, "publish", args)
    }

    /// Runs `abnix-update fleet ARGS` against the fleet's channel and its
    /// hosts' reports, as the operator; returns what it printed.
    pub fn fleet_view(&self, args: &[String]) -> Result<String> {
        let mut fleet = self.operator_command("fleet", &self.channel, &self.public_key());
        run_operator(fleet.args(args), "fleet", args)
    }

    /// `abnix-update SUBCOMMAND` reaching the bucket from this machine with
    /// the operator's credentials, on `channel`, trusting `key`.
    fn operator_command(&self, subcommand: &str, channel: &str, key: &PublicKey) -> Command {
        let mut command = Command::new(&self.updater);
        command
            .arg(subcommand)
            .args(["--endpoint", &self.server.endpoint()])
            .args(["--region", "us-east-1", "--bucket", self.server.bucket()])
            .args(["--prefix", PREFIX, "--channel", channel, "--path-style"])
            .arg("--credentials")
            .arg(&self.credentials)
            .args(["--trusted-key", &key.to_string()]);
        command
    }

    /// Damages the stored image object of `release` as a bad disk or a
    /// hostile mirror would: one byte flipped in the middle of every
    /// chunk's frame, so whatever part of it a host downloads fails its
    /// hash. The object keeps its size.
    pub fn tamper_image(&self, release: &Release) -> Result<()> {
        let meta = &release.meta.meta();
        let index_path = release.bundle.join(&meta.index.object);
        let index = Index::parse(
            &fs::read(&index_path).with_context(|| format!("reading {}", index_path.display()))?,
        )?;
        let path = self.object_path(&meta.image.object);
        let mut bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        for chunk in &index.chunks {
            let middle = chunk.compressed_offset + u64::from(chunk.compressed_len) / 2;
            bytes[usize::try_from(middle)?] ^= 0x55;
        }
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Alters the stored kernel object of `release` as a bucket writer
    /// would: one byte flipped in its middle, its size kept, so only its
    /// hash can tell.
    pub fn tamper_kernel(&self, release: &Release) -> Result<()> {
        let path = self.object_path(&release.meta.meta().kernel.object);
        let mut bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Copies `release`, as published on channel `from`, into the fleet's
    /// channel as a bucket writer would: its objects, its meta and
    /// signatures, and `from`'s channel meta as the fleet channel's.
    pub fn copy_from_channel(&self, from: &str, release: &Release) -> Result<()> {
        let copy = |from: PathBuf, to: PathBuf| {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))
        };
        for name in release.meta.meta().object_names() {
            copy(
                self.server.object_path(&format!("{PREFIX}/{from}/{name}")),
                self.object_path(&name),
            )?;
        }
        copy(
            self.server.object_path(&format!("{PREFIX}/{from}.meta")),
            self.server
                .object_path(&format!("{PREFIX}/{}.meta", self.channel)),
        )?;
        Ok(())
    }

    /// Where the server keeps the channel's object `name`.
    fn object_path(&self, name: &str) -> PathBuf {
        self.server
            .object_path(&format!("{PREFIX}/{}/{name}", self.channel))
    }
}

fn credentials_toml(server: &S3Server) -> String {
    format!(
        "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        server.access_key(),
        server.secret_key()
    )
}

/// Runs an operator's command; its standard output if it succeeded.
fn run_operator(command: &mut Command, subcommand: &str, args: &[String]) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {:?}", command.get_program()))?;
    ensure!(
        output.status.success(),
        "abnix-update {subcommand} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8(output.stdout).with_context(|| format!("the output of {subcommand}"))
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))
}
