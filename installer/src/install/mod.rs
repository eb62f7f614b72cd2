//! The installer (DESIGN §7): a verified bundle onto a disk or a disk-image
//! file, as a bootable A/B disk.
//!
//! Two steps, so a person can be shown what will happen in between:
//!
//! 1. [`prepare`] checks everything it can without writing a byte: the
//!    bundle's signature and objects, the bootloader's files (GRUB images are
//!    built here), e2fsprogs, the image's filesystem (from the superblock in
//!    its first chunk), the target (chosen automatically by
//!    [`target::select`], or named and checked by [`target::check_disk`]:
//!    among others, not the installer's own medium however it booted
//!    (`medium`), no logical sectors larger than the filesystem's blocks),
//!    the layout on it, that the image fits a slot, that the ESP takes
//!    FAT32, the bootloader and two slots' boot files (`esp_room`), and
//!    what the target holds ([`Contents`]: anything but a provably blank
//!    disk needs `wipe`). Every failure here leaves the target untouched.
//! 2. [`Plan::install`] (or [`execute`] on any [`Disk`]) writes, making the
//!    disk bootable last, as coreos-installer does. First, when the target
//!    is not blank (what `wipe` allowed to erase), the whole image object
//!    is checked against the signed index without writing
//!    ([`verify_object`]), so a corrupt bundle leaves that as it was; on a
//!    blank target this pass is skipped, since a failure loses nothing
//!    there and templates stay fast (the chunks are checked as they are
//!    written either way). Then the target is opened for writing, a block
//!    device exclusively, and checked to be the disk that was examined,
//!    holding what it held ([`device`]); otherwise nothing is written.
//!    Then:
//!    1. erase old signatures on the disk (on a disk that was not blank,
//!       every area where one can sit) and inside every new partition's
//!       range (an old ESP or a root filesystem with the same UUID must not
//!       survive at the new offsets), and the MBR's boot code;
//!    2. the GPT (GUIDs from the seed);
//!    3. slot A from the bundle through the pipeline, read back and verified;
//!    4. `abnix-rw`: ext4 and the host's directories ([`rwfs`]);
//!    5. the ESP: the bootloader, slot A's boot files, slot A marked good
//!       (slot B has no boot files, so it is bad) — from here UEFI boots;
//!    6. GRUB's BIOS boot code: core.img, then boot.img into the MBR — from
//!       here BIOS boots.
//!
//!    Each step syncs before the next. If any step fails, the partition
//!    table is wiped ([`gpt::wipe`]), so the disk cannot boot half-installed,
//!    and the error says so.

#[cfg(test)]
mod blank_tests;
mod contents;
pub mod device;
mod esp_room;
pub mod libblkid;
pub mod medium;
pub mod system;
pub mod target;
#[cfg(test)]
mod tests;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor, Read, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tracing::{info, warn};
use uuid::Uuid;

pub use contents::{BlkidView, Contents, ExamineError};
use device::{DeviceIdentity, OpenError, Opened};
use libblkid::Libblkid;
use medium::Survey;
pub use system::System;
use target::{NoEligibleDisk, Requirements, Selection};

use crate::probe::{erase_signatures, probe_signatures, zero_areas};
use abnix_core::blockdev::{self, BlockDevError, DiskInfo, SysRoot};
use abnix_core::boot::grub::bios;
use abnix_core::boot::grub::cfg::slot_cfg;
use abnix_core::boot::systemd_boot::bls;
use abnix_core::boot::{
    BootError, BootFiles, BootPayload, BootloaderError, BootloaderSetup, SlotInfo,
};
use abnix_core::bundle::{Bundle, BundleError};
use abnix_core::pipeline::{
    read_image_head, verify_object, write_image, ImageSpec, PipelineError, VerifiedImage,
    WriteOptions,
};
use abnix_core::progress::Progress;
use abnix_core::rwfs::{self, RwError};
use abnix_core::units::Bytes;
use abnix_formats::disk::{Disk, Region};
use abnix_formats::fat::FormatOptions;
use abnix_formats::fsid::{read_superblock, FsIdError, Superblock, SUPERBLOCK_END};
use abnix_formats::gpt::{self, GptError};
use abnix_formats::layout::{self, Arch, Layout, LayoutConfig, LayoutError, MIB};
use abnix_formats::sign::TrustedKeys;
use abnix_formats::slot::Slot;

/// The ESP's FAT volume label.
pub const ESP_LABEL: &str = "ABNIX-ESP";

/// Where to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRequest {
    /// A whole disk, e.g. `/dev/vda` or a `/dev/disk/by-id/…` link.
    Disk(PathBuf),
    /// A disk-image file of `size` bytes, created or extended (sparse).
    File { path: PathBuf, size: u64 },
    /// The first eligible disk ([`target::select`]).
    Auto,
}

/// Everything the installer is told.
#[derive(Debug, Clone)]
pub struct Request {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The keys the bundle's signature is checked against; at least one.
    pub trusted_keys: TrustedKeys,
    pub target: TargetRequest,
    pub layout: LayoutConfig,
    pub bootloader: BootloaderSetup,
    /// Overwrite a target that is not provably blank (see [`Contents`]).
    pub wipe: bool,
    /// Let automatic selection choose removable disks.
    pub allow_removable: bool,
    /// Derives the GPT GUIDs and filesystem ids, for reproducible
    /// templates; random when `None`.
    pub seed: Option<[u8; 32]>,
}

/// The disk or file the installer writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    size: u64,
    sector_size: u32,
    /// What sysfs says about it; `None` for a disk-image file.
    device: Option<DiskInfo>,
    /// What makes it the target that was examined.
    identity: Identity,
}

/// What must still hold when the target is opened for writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A file the installer creates: it must not exist yet.
    NewFile,
    /// An existing disk-image file: the same inode (`st_dev`, `st_ino`).
    File { dev: u64, ino: u64 },
    /// A block device: the same device, not in use (see [`device`]).
    Device(DeviceIdentity),
}

/// Why the target is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// To write the installation: checked to be the target examined.
    Write,
    /// Again after a failed write, to wipe the partition table.
    Reset,
}

impl Target {
    /// Opens the target for writing (see [`Identity`]); a disk-image file
    /// is created, and extended (sparse) to its size once it was checked
    /// ([`Opened::grow`]).
    fn open(&self, opening: Opening) -> Result<Opened<File>, InstallError> {
        let failed = |source: OpenError| InstallError::Open {
            path: self.path.clone(),
            source,
        };
        let file = match (&self.identity, opening) {
            (Identity::Device(checked), _) => {
                return Opened::device(&self.path, checked, &SysRoot::default()).map_err(failed)
            }
            (Identity::NewFile, Opening::Write) => File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&self.path)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => failed(OpenError::File(
                        "it did not exist when it was checked, and now it does".to_owned(),
                    )),
                    _ => failed(e.into()),
                })?,
            (Identity::File { dev, ino }, Opening::Write) => {
                let file = File::options()
                    .read(true)
                    .write(true)
                    .open(&self.path)
                    .map_err(|e| failed(e.into()))?;
                let now = device::file_identity(&file).map_err(|e| failed(e.into()))?;
                if now != (*dev, *ino) {
                    return Err(failed(OpenError::File(
                        "it was replaced by another file since it was checked".to_owned(),
                    )));
                }
                file
            }
            (_, Opening::Reset) => File::options()
                .read(true)
                .write(true)
                .open(&self.path)
                .map_err(|e| failed(e.into()))?,
        };
        let grow = file.try_clone().map_err(|e| failed(e.into()))?;
        Ok(Opened::file(file, &self.path).growing(grow, self.size))
    }

    pub fn describe(&self) -> String {
        match &self.device {
            Some(disk) => target::describe(disk),
            None => format!(
                "file {} ({}, {}-byte sectors)",
                self.path.display(),
                Bytes(self.size),
                self.sector_size
            ),
        }
    }
}

/// What [`prepare`] found and decided; [`Plan::install`] carries it out.
#[derive(Debug)]
pub struct Plan {
    pub bundle: Bundle,
    pub target: Target,
    /// How the target was chosen, when it was chosen automatically.
    pub selection: Option<Selection>,
    pub contents: Contents,
    pub layout: Layout,
    pub boot: BootPayload,
    /// How libblkid was asked, to ask again before the first write.
    libblkid: Libblkid,
    seed: [u8; 32],
}

/// Why nothing was installed, or why an installation failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("no trusted key: the bundle's signature must be verified before anything is written (pass --trusted-key or --trusted-keys-file)")]
    NoTrustedKeys,
    #[error("the bundle: {0}")]
    Bundle(#[from] BundleError),
    #[error(
        "the bundle's version {version} is built for {built_for} machines, not {arch} (--arch)"
    )]
    WrongArch {
        version: u64,
        built_for: Arch,
        arch: Arch,
    },
    #[error("version {version} cannot be booted by {bootloader}: {source}")]
    Unbootable {
        version: u64,
        bootloader: &'static str,
        source: BootError,
    },
    #[error(transparent)]
    Bootloader(#[from] BootloaderError),
    #[error("formatting abnix-rw needs e2fsprogs: {0}")]
    Tools(RwError),
    #[error("listing the disks: {0}")]
    Scan(#[from] BlockDevError),
    #[error(transparent)]
    NoEligibleDisk(#[from] NoEligibleDisk),
    /// The target is not what its flag asks for: `--disk` names a
    /// partition or a file, `--file` a device.
    #[error("{}: {reason}", path.display())]
    WrongKind { path: PathBuf, reason: String },
    #[error("{} cannot be the target: {reason}", path.display())]
    Ineligible {
        path: PathBuf,
        reason: target::Ineligible,
    },
    #[error("the installer's medium: {0}")]
    Medium(String),
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: OpenError },
    #[error("{} is {have} bytes, more than the {size} asked for: remove it or ask for at least its size", path.display())]
    FileLarger { path: PathBuf, have: u64, size: u64 },
    #[error("{}: {source}", path.display())]
    Layout { path: PathBuf, source: LayoutError },
    #[error("the image of version {version} is {} ({image} bytes), more than a slot of {} ({slot} bytes): raise the slot size", Bytes(*image), Bytes(*slot))]
    ImageTooLarge { version: u64, image: u64, slot: u64 },
    #[error("reading the image's first chunk: {0} (copy or pack the bundle again)")]
    ImageHead(PipelineError),
    #[error("the image's filesystem: {0}")]
    ImageFs(FsIdError),
    #[error("an ESP of {} cannot hold FAT32 on {sector_size}-byte sectors, {bootloader} and the boot files of two slots (a {} kernel and a {} initrd each: slot a's now, slot b's beside them at an update): pass --esp-size {}M or more", Bytes(*size), Bytes(*kernel), Bytes(*initrd), needed / MIB)]
    EspTooSmall {
        size: u64,
        sector_size: u32,
        bootloader: &'static str,
        kernel: u64,
        initrd: u64,
        /// The ESP size that fits, a whole number of MiB.
        needed: u64,
    },
    #[error("trying the ESP in memory: {0}")]
    EspTrial(BootError),
    #[error("the bundle's image object does not verify, nothing was written: {0} (copy or pack the bundle again)")]
    ImageObject(PipelineError),
    #[error("{} holds {found}: pass --wipe to erase it", path.display())]
    NotEmpty { path: PathBuf, found: String },
    #[error("cannot prove {} blank: wipefs (util-linux) is not installed, so libblkid cannot look for what abnix's own probe does not know (XFS, btrfs, ZFS, NTFS, …); install util-linux, or pass --wipe to erase whatever it holds", path.display())]
    Unproven { path: PathBuf },
    #[error("reading what {} holds: {source}", path.display())]
    Probe { path: PathBuf, source: ExamineError },
    #[error("{} changed since it was checked, nothing was written: it held {was}, now it holds {now}", path.display())]
    Changed {
        path: PathBuf,
        was: String,
        now: String,
    },
    #[error("no randomness for the disk's GUIDs: {0}")]
    Random(String),
    #[error("{failed}. {}", match reset {
        None => "The partition table was wiped, so the disk cannot boot half-installed".to_owned(),
        Some(e) => format!("Wiping the partition table failed too ({e}): do not boot this disk, install again or wipe it"),
    })]
    Failed {
        failed: Box<WriteError>,
        /// Why the reset failed; `None` when the table was wiped.
        reset: Option<String>,
    },
}

/// The step of the installation that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("erasing old signatures: {0}")]
    Erase(io::Error),
    #[error("writing the partition table: {0}")]
    Table(GptError),
    #[error("reading the bundle's {what}: {source}")]
    Bundle {
        what: &'static str,
        source: io::Error,
    },
    #[error("writing slot a: {0}")]
    Slot(PipelineError),
    #[error("formatting abnix-rw: {0}")]
    Rw(RwError),
    #[error("claiming the disk again after mkfs.ext4: {0}")]
    Claim(io::Error),
    #[error("syncing the target: {0}")]
    Sync(io::Error),
    #[error("installing {bootloader} on the ESP: {source}")]
    Esp {
        bootloader: &'static str,
        source: BootError,
    },
    #[error("writing the boot files of slot a: {0}")]
    BootFiles(BootError),
    #[error("installing GRUB's BIOS boot code: {0}")]
    Bios(BootError),
}

/// The version's slot file contents.
fn slot_info(bundle: &Bundle) -> SlotInfo {
    SlotInfo::of(bundle.signed.meta())
}

/// Checks what boot control would refuse in `write_boot_files` (a label or
/// command line the bootloader cannot carry), before anything is written.
fn check_bootable(info: &SlotInfo, boot: &BootloaderSetup) -> Result<(), BootError> {
    info.validate()?;
    match boot {
        BootloaderSetup::Grub { .. } => {
            slot_cfg(Slot::A, &info.cmdline)?;
        }
        BootloaderSetup::SystemdBoot { .. } => {
            bls::slot_entry(Slot::A, info.version, &info.label, &info.cmdline).serialize()?;
        }
    }
    Ok(())
}

/// The kernel name of the whole disk behind `path` (following
/// `/dev/disk/by-id/…` links).
fn disk_name(path: &Path) -> Result<String, InstallError> {
    let open_error = |source: io::Error| InstallError::Open {
        path: path.to_owned(),
        source: source.into(),
    };
    let real = fs::canonicalize(path).map_err(open_error)?;
    let kind = fs::metadata(&real).map_err(open_error)?.file_type();
    if !kind.is_block_device() {
        return Err(InstallError::WrongKind {
            path: path.to_owned(),
            reason: "not a block device (use --file for a disk-image file)".into(),
        });
    }
    Ok(real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// Adds to `disk` the users sysfs does not show: loop devices reading from
/// it, and, when nothing else uses it, the kernel refusing exclusive access
/// (a mount in another namespace, a program holding it open exclusively).
fn add_hidden_users(system: &dyn System, survey: &Survey, disk: &mut DiskInfo) {
    if let Some(busy) = survey.busy.get(&disk.name) {
        disk.other_users.extend(busy.iter().cloned());
    }
    if disk.usage().is_empty() {
        if let Err(e) = system.exclusive_access(&disk.name) {
            disk.other_users
                .push(format!("the kernel refuses exclusive access ({e})"));
        }
    }
}

/// Reads disk `name` from sysfs and checks it can be the target: a named
/// disk may be removable, but everything else [`target::check_disk`] asks
/// holds.
pub fn check_named_disk(
    system: &dyn System,
    path: &Path,
    name: &str,
    survey: &Survey,
    req: &Requirements,
) -> Result<DiskInfo, InstallError> {
    let sys = system.root();
    if !sys.root.join("sys/block").join(name).exists() {
        return Err(InstallError::WrongKind {
            path: path.to_owned(),
            reason: format!("{name} is not a whole disk (a partition?)"),
        });
    }
    let mut disk = sys.disk(name)?;
    add_hidden_users(system, survey, &mut disk);
    let named = Requirements {
        allow_removable: true,
        ..req.clone()
    };
    target::check_disk(&disk, &survey.media, &named).map_err(|reason| {
        InstallError::Ineligible {
            path: path.to_owned(),
            reason,
        }
    })?;
    Ok(disk)
}

/// Examines what `disk` (named `path` for libblkid) holds.
fn examine<D: Disk + ?Sized>(
    disk: &mut D,
    path: &Path,
    libblkid: &Libblkid,
) -> Result<Contents, InstallError> {
    Contents::examine(disk, path, libblkid).map_err(|source| InstallError::Probe {
        path: path.to_owned(),
        source,
    })
}

/// Finds the target and examines it without writing: its size, sector
/// size, identity and contents.
fn find_target(
    request: &Request,
    system: &dyn System,
    req: &Requirements,
) -> Result<(Target, Option<Selection>, Contents), InstallError> {
    let open_error = |path: &Path| {
        let path = path.to_owned();
        move |source: io::Error| InstallError::Open {
            path,
            source: source.into(),
        }
    };
    let libblkid = system.libblkid();

    let (device, selection) = match &request.target {
        TargetRequest::File { path, size } => {
            let (contents, identity) = match File::open(path) {
                Ok(mut file) => {
                    let metadata = file.metadata().map_err(open_error(path))?;
                    if !metadata.is_file() {
                        return Err(InstallError::WrongKind {
                            path: path.clone(),
                            reason: "not a regular file (use --disk for a device)".into(),
                        });
                    }
                    let have = metadata.len();
                    if have > *size {
                        return Err(InstallError::FileLarger {
                            path: path.clone(),
                            have,
                            size: *size,
                        });
                    }
                    let (dev, ino) = device::file_identity(&file).map_err(open_error(path))?;
                    (
                        examine(&mut file, path, &libblkid)?,
                        Identity::File { dev, ino },
                    )
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    (Contents::new_file(), Identity::NewFile)
                }
                Err(e) => return Err(open_error(path)(e)),
            };
            let target = Target {
                path: path.clone(),
                size: *size,
                // What sgdisk and the loop driver assume for a file.
                sector_size: 512,
                device: None,
                identity,
            };
            return Ok((target, None, contents));
        }
        TargetRequest::Disk(path) => {
            let name = disk_name(path)?;
            let survey = medium::survey(system, &request.bundle)?;
            (check_named_disk(system, path, &name, &survey, req)?, None)
        }
        TargetRequest::Auto => {
            let survey = medium::survey(system, &request.bundle)?;
            let mut scan = system.root().disks()?;
            for disk in &mut scan.disks {
                add_hidden_users(system, &survey, disk);
            }
            let selection = target::select(&scan, &survey.media, req)?;
            (selection.chosen.clone(), Some(selection))
        }
    };
    let path = device.dev_path.clone();
    let mut file = File::open(&path).map_err(open_error(&path))?;
    let identity = DeviceIdentity::of(&file, system.root()).map_err(|e| InstallError::Open {
        path: path.clone(),
        source: OpenError::Identity(e.to_string()),
    })?;
    if identity.name != device.name {
        return Err(InstallError::Open {
            path: path.clone(),
            source: OpenError::NotTheSame(vec![format!(
                "sysfs describes {}, the device node opens {}",
                device.name, identity.name
            )]),
        });
    }
    let sector_size = blockdev::logical_sector_size(&file).map_err(open_error(&path))?;
    let contents = examine(&mut file, &path, &libblkid)?;
    let target = Target {
        path,
        size: identity.size,
        sector_size,
        device: Some(device),
        identity: Identity::Device(identity),
    };
    Ok((target, selection, contents))
}

/// Checks everything before anything is written (see the module docs), on
/// the running system `system` (a [`SysRoot`] is the real one).
pub fn prepare(request: &Request, system: &dyn System) -> Result<Plan, InstallError> {
    if request.trusted_keys.is_empty() {
        return Err(InstallError::NoTrustedKeys);
    }
    let bundle = Bundle::open(&request.bundle, &request.trusted_keys)?;
    let meta = bundle.signed.meta();
    info!(
        version = meta.version,
        id = %meta.id,
        signer = bundle.signed.signer(),
        "bundle verified"
    );
    if meta.arch != request.layout.arch {
        return Err(InstallError::WrongArch {
            version: meta.version,
            built_for: meta.arch,
            arch: request.layout.arch,
        });
    }
    check_bootable(&slot_info(&bundle), &request.bootloader).map_err(|source| {
        InstallError::Unbootable {
            version: meta.version,
            bootloader: request.bootloader.kind().name(),
            source,
        }
    })?;
    let boot = request.bootloader.prepare(request.layout.arch)?;
    rwfs::check_tools().map_err(InstallError::Tools)?;
    let image_fs = image_superblock(&bundle)?;

    let req = Requirements {
        layout: request.layout.clone(),
        bios_boot: request.bootloader.bios_boot(),
        allow_removable: request.allow_removable,
        image_fs: image_fs.fs,
        image_block_size: image_fs.block_size,
    };
    let (target, selection, contents) = find_target(request, system, &req)?;
    let layout_error = |source| InstallError::Layout {
        path: target.path.clone(),
        source,
    };
    let layout =
        layout::compute(target.size, target.sector_size, &request.layout).map_err(layout_error)?;
    if meta.image.size > layout.slot_a.size {
        return Err(InstallError::ImageTooLarge {
            version: meta.version,
            image: meta.image.size,
            slot: layout.slot_a.size,
        });
    }
    let esp_files = esp_room::SlotFiles {
        signed: &bundle.signed,
        kernel_len: meta.kernel.size,
        initrd_len: meta.initrd.size,
    };
    let esp_needed = esp_room::needed_size(layout.esp.size, target.sector_size, &boot, &esp_files)
        .map_err(InstallError::EspTrial)?;
    if esp_needed > layout.esp.size {
        return Err(InstallError::EspTooSmall {
            size: layout.esp.size,
            sector_size: target.sector_size,
            bootloader: boot.describe(),
            kernel: meta.kernel.size,
            initrd: meta.initrd.size,
            needed: esp_needed,
        });
    }
    info!("{} holds {contents}", target.path.display());
    if !contents.is_blank() && !request.wipe {
        if contents.unproven() {
            return Err(InstallError::Unproven {
                path: target.path.clone(),
            });
        }
        return Err(InstallError::NotEmpty {
            path: target.path.clone(),
            found: contents.to_string(),
        });
    }
    let seed = match request.seed {
        Some(seed) => seed,
        None => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| InstallError::Random(e.to_string()))?;
            seed
        }
    };
    Ok(Plan {
        bundle,
        target,
        selection,
        contents,
        layout,
        boot,
        libblkid: system.libblkid(),
        seed,
    })
}

/// The image as the signed meta and index describe it.
fn image_spec(bundle: &Bundle) -> ImageSpec<'_> {
    let meta = bundle.signed.meta();
    ImageSpec {
        index: &bundle.index,
        size: meta.image.size,
        sha256: meta.image.sha256,
    }
}

/// The image's filesystem, from the superblock in its first chunk.
fn image_superblock(bundle: &Bundle) -> Result<Superblock, InstallError> {
    let head = File::open(bundle.image_path())
        .map_err(PipelineError::Source)
        .and_then(|object| read_image_head(object, &image_spec(bundle), SUPERBLOCK_END))
        .map_err(InstallError::ImageHead)?;
    read_superblock(&mut Cursor::new(head)).map_err(InstallError::ImageFs)
}

/// 32 bytes for `purpose`, derived from the seed.
fn derive(seed: &[u8; 32], purpose: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(seed)
        .chain_update(purpose.as_bytes())
        .finalize()
        .into()
}

/// What an installation did.
#[derive(Debug, Clone)]
pub struct Summary {
    target: String,
    layout: Layout,
    version: u64,
    id: Uuid,
    label: String,
    bootloader: &'static str,
    arch: Arch,
    elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "installed version {} {:?} (id {}) onto {} in {:.1} s",
            self.version,
            self.label,
            self.id,
            self.target,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "bootloader: {} for {}; slot a: version {}, good, boots next; slot b: empty",
            self.bootloader, self.arch, self.version
        )?;
        write!(f, "{}", self.layout)
    }
}

impl fmt::Display for Plan {
    /// What will happen, for the countdown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.bundle.signed.meta();
        if let Some(selection) = &self.selection {
            writeln!(f, "{selection}")?;
        }
        writeln!(
            f,
            "installing version {} {:?} (id {}) from {}",
            meta.version,
            meta.label,
            meta.id,
            self.bundle.dir.display()
        )?;
        writeln!(f, "onto {}", self.target.describe())?;
        if self.contents.is_blank() {
            writeln!(f, "which holds {}", self.contents)?;
        } else {
            writeln!(f, "ERASING what it holds: {}", self.contents)?;
        }
        if self.checks_image_first() {
            writeln!(
                f,
                "the whole image is verified before the first write, so a bad bundle leaves the disk as it is"
            )?;
        }
        let arch = self.boot.arch();
        writeln!(f, "bootloader: {} for {arch}", self.boot.describe())?;
        if !arch.has_bios() {
            writeln!(
                f,
                "{arch} machines boot through UEFI only: no BIOS boot code, abnix-bios stays empty"
            )?;
        }
        write!(f, "{}", self.layout)
    }
}

impl Plan {
    /// Whether the image object is checked whole before the first write:
    /// when the target holds something a failed write would erase. A blank
    /// target loses nothing to a failure, so its image is checked only as
    /// it is written.
    pub fn checks_image_first(&self) -> bool {
        !self.contents.is_blank()
    }

    /// Installs onto the target (see [`execute`]) and, on a block device,
    /// asks the kernel to read the new partition table.
    pub fn install(&self, progress: &dyn Progress) -> Result<Summary, InstallError> {
        let summary = execute(self, |opening| self.target.open(opening), progress)?;
        if self.target.device.is_some() {
            let reread = File::open(&self.target.path)
                .and_then(|disk| blockdev::reread_partition_table(&disk));
            if let Err(e) = reread {
                // The disk is complete; the running kernel merely keeps its
                // old view until the next boot.
                warn!("the kernel did not re-read the new partition table: {e}");
            }
        }
        Ok(summary)
    }
}

/// Writes the plan onto the target `open` gives (see the module docs). An
/// image that fails the check before the first write is
/// [`InstallError::ImageObject`], a target that is not what was examined
/// [`InstallError::Open`] or [`InstallError::Changed`], each with nothing
/// written; on a failure after that the partition table is wiped through
/// the target opened afresh (the handle that failed may keep failing).
pub fn execute<D: Disk>(
    plan: &Plan,
    mut open: impl FnMut(Opening) -> Result<Opened<D>, InstallError>,
    progress: &dyn Progress,
) -> Result<Summary, InstallError> {
    let started = Instant::now();
    check_image_first(plan, progress)?;
    let mut target = open(Opening::Write)?;
    check_contents_again(plan, &mut target)?;
    target.grow().map_err(|e| InstallError::Open {
        path: plan.target.path.clone(),
        source: e.into(),
    })?;
    let result = write(plan, &mut target, progress);
    drop(target);
    if let Err(failed) = result {
        warn!("installation failed ({failed}); wiping the partition table");
        let reset = open(Opening::Reset)
            .map_err(|e| e.to_string())
            .and_then(|mut target| {
                target.grow().map_err(|e| e.to_string())?;
                gpt::wipe(&mut target.disk, plan.target.sector_size).map_err(|e| e.to_string())
            });
        return Err(InstallError::Failed {
            failed: Box::new(failed),
            reset: reset.err(),
        });
    }
    let meta = plan.bundle.signed.meta();
    let summary = Summary {
        target: plan.target.describe(),
        layout: plan.layout.clone(),
        version: meta.version,
        id: meta.id,
        label: meta.label.clone(),
        bootloader: plan.boot.describe(),
        arch: plan.boot.arch(),
        elapsed: started.elapsed(),
    };
    info!("{}", summary.to_string().lines().next().unwrap_or_default());
    Ok(summary)
}

/// Just before the first write: the target still holds what it held when
/// it was examined (nothing was written to it during the countdown). A file
/// the installer creates was created just now.
fn check_contents_again<D: Disk>(plan: &Plan, target: &mut Opened<D>) -> Result<(), InstallError> {
    if plan.contents.libblkid == BlkidView::NotAsked {
        return Ok(());
    }
    let path = target.tools_path().to_owned();
    let now = examine(&mut target.disk, &path, &plan.libblkid)?;
    if now != plan.contents {
        return Err(InstallError::Changed {
            path: plan.target.path.clone(),
            was: plan.contents.to_string(),
            now: now.to_string(),
        });
    }
    Ok(())
}

/// Step 0: the whole image object against the signed index, without
/// writing, when the plan says so; either way, says which and why.
fn check_image_first(plan: &Plan, progress: &dyn Progress) -> Result<(), InstallError> {
    if !plan.checks_image_first() {
        info!(
            "the target is blank: the image is verified chunk by chunk as it is written \
             (a failure loses nothing there), not before"
        );
        return Ok(());
    }
    info!(
        "verifying the whole image before the first write: the target holds {}, \
         which a failed write would erase",
        plan.contents
    );
    File::open(plan.bundle.image_path())
        .map_err(PipelineError::Source)
        .and_then(|object| {
            verify_object(
                object,
                &image_spec(&plan.bundle),
                &WriteOptions::default(),
                progress,
            )
        })
        .map_err(InstallError::ImageObject)
}

/// Zeroes the MBR's boot code (bytes 0..440): an old bootloader there must
/// not run until the new one is complete.
fn erase_boot_code<D: Disk>(disk: &mut D) -> io::Result<()> {
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&[0u8; 440])
}

/// Step 1: old signatures on the disk (when it was not blank: every magic
/// either probe found, and every area where one can sit) and inside each
/// new partition.
fn erase<D: Disk>(plan: &Plan, disk: &mut D) -> io::Result<()> {
    if !plan.contents.is_blank() {
        for (offset, len) in plan.contents.magic() {
            disk.seek(SeekFrom::Start(offset))?;
            disk.write_all(&vec![0u8; len])?;
        }
        zero_areas(disk)?;
    }
    for part in plan.layout.partitions() {
        let mut region = Region::new(&mut *disk, part.start, part.size);
        let found = probe_signatures(&mut region)?;
        if !found.is_empty() {
            let names: Vec<String> = found.iter().map(ToString::to_string).collect();
            info!("erasing {} inside {}", names.join("; "), part.name);
        }
        erase_signatures(&mut region, &found)?;
    }
    erase_boot_code(disk)?;
    disk.sync()
}

/// A reader that reports what passes through it to `progress`.
struct Reporting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
}

impl<R: Read> Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Step 5: the ESP, with slot A bootable and good: its boot files need
/// the proof that slot A holds the bundle's image.
fn install_esp<D: Disk>(
    plan: &Plan,
    disk: &mut D,
    image: &VerifiedImage,
    progress: &dyn Progress,
) -> Result<(), WriteError> {
    let esp = Region::new(&mut *disk, plan.layout.esp.start, plan.layout.esp.size);
    let format = FormatOptions {
        label: ESP_LABEL.to_owned(),
        volume_id: u32::from_le_bytes(derive(&plan.seed, "esp volume id")[..4].try_into().unwrap()),
        sector_size: plan.target.sector_size,
    };
    let mut boot = plan
        .boot
        .install(esp, format)
        .map_err(|source| WriteError::Esp {
            bootloader: plan.boot.describe(),
            source,
        })?;

    let meta = plan.bundle.signed.meta();
    let open = |what: &'static str, artifact: &abnix_formats::meta::Artifact| {
        // Read again and checked while written: the bundle was verified
        // when it was opened, but files can change under us.
        File::open(plan.bundle.path_of(artifact))
            .map_err(|source| WriteError::Bundle { what, source })
    };
    progress.start(
        "writing boot files",
        Some(meta.kernel.size + meta.initrd.size),
    );
    let mut kernel = Reporting {
        inner: open("kernel", &meta.kernel)?,
        progress,
    };
    let mut initrd = Reporting {
        inner: open("initrd", &meta.initrd)?,
        progress,
    };
    let files = BootFiles::of_version(&plan.bundle.signed, image, &mut kernel, &mut initrd)
        .map_err(WriteError::BootFiles)?;
    boot.write_boot_files(Slot::A, files)
        .map_err(WriteError::BootFiles)?;
    progress.finish();
    // Good at once: there is no older version to fall back to. mark_good
    // also makes A the slot that boots first.
    boot.mark_good(Slot::A).map_err(WriteError::BootFiles)
}

/// The installation's writes, in order (see the module docs).
fn write<D: Disk>(
    plan: &Plan,
    target: &mut Opened<D>,
    progress: &dyn Progress,
) -> Result<(), WriteError> {
    let layout = &plan.layout;
    let sector_size = plan.target.sector_size;
    let disk = &mut target.disk;

    info!("erasing old signatures");
    erase(plan, disk).map_err(WriteError::Erase)?;

    info!("writing the partition table");
    layout
        .to_gpt(&plan.seed)
        .write(disk)
        .map_err(WriteError::Table)?;

    let image = File::open(plan.bundle.image_path()).map_err(|source| WriteError::Bundle {
        what: "image",
        source,
    })?;
    let spec = image_spec(&plan.bundle);
    let options = WriteOptions {
        verify_readback: true,
        target_name: format!("slot {}", Slot::A),
        ..WriteOptions::default()
    };
    let mut slot = Region::new(&mut *disk, layout.slot_a.start, layout.slot_a.size);
    let written =
        write_image(image, &spec, &mut slot, &options, progress).map_err(WriteError::Slot)?;
    let verified = written
        .verified
        .expect("slot a is written with verify_readback");

    info!("formatting abnix-rw");
    let rw_uuid = uuid::Builder::from_random_bytes(
        derive(&plan.seed, "abnix-rw filesystem")[..16]
            .try_into()
            .unwrap(),
    )
    .into_uuid();
    target
        .run_tools(|path| rwfs::format(path, &layout.rw, rw_uuid))
        .map_err(WriteError::Claim)?
        .map_err(WriteError::Rw)?;
    let disk = &mut target.disk;
    // mkfs.ext4 wrote through its own descriptor: make it durable before
    // the disk becomes bootable.
    disk.sync().map_err(WriteError::Sync)?;

    info!("installing {}", plan.boot.describe());
    install_esp(plan, disk, &verified, progress)?;

    if let BootPayload::Grub {
        bios: Some(images), ..
    } = &plan.boot
    {
        info!("installing GRUB's BIOS boot code");
        let ss = u64::from(sector_size);
        bios::install(
            disk,
            sector_size,
            layout.bios.start / ss,
            layout.bios.size / ss,
            images,
        )
        .map_err(WriteError::Bios)?;
    }
    disk.sync().map_err(WriteError::Sync)
}
