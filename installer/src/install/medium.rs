//! The installer's own medium, and other disks the running system reads
//! from, however it booted: found from what the system actually reads, not
//! from where a medium is usually mounted.
//!
//! - The devices behind `/`, `/iso` (where NixOS's ISO mounts its medium)
//!   and `/nix/store`, and behind the bundle: through overlays to each of
//!   their layers (NixOS's store is an overlay over `/nix/.ro-store`, a
//!   squashfs), and through loop devices to the device holding their backing
//!   file (`LOOP_GET_STATUS64`'s `lo_device`, which stays true when the
//!   file's path no longer resolves here).
//! - The kernel command line: `root=` (NixOS's ISO boots with
//!   `root=LABEL=<its volume id>`; `UUID=`, `PARTUUID=`, `PARTLABEL=`, a
//!   `/dev/` path and dracut's `live:` forms too) resolved through udev's
//!   `/dev/disk` links or `findfs`, and `findiso=` (an ISO file on another
//!   disk, looped by the initrd) matched against the loop devices' backing
//!   files.
//! - Every other loop device makes the disk holding its backing file busy.
//!
//! So a `copytoram` boot (the ISO copied into RAM, `/iso` a tmpfs) still
//! finds the USB stick by its label, a boot from an ISO file finds the disk
//! holding the file although the initrd's mount of it is out of sight, and
//! a netboot finds nothing to protect.

use std::collections::BTreeMap;
use std::path::Path;

use tracing::info;

use super::system::{System, TagLookup};
use super::target::InstallerMedium;
use super::InstallError;
use abnix_core::blockdev::{mount_of, BlockDevice, MountEntry};

/// Paths whose devices are the running system itself.
const SYSTEM_PATHS: &[&str] = &["/", "/iso", "/nix/store"];

/// Overlays and loop devices stacked deeper than this are not followed.
const MAX_DEPTH: usize = 8;

/// What [`survey`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    /// Disks the installer runs from, first reason per disk.
    pub(crate) media: Vec<InstallerMedium>,
    /// Disk name → why it is busy although sysfs shows nothing (a loop
    /// device reading a file from it).
    pub(crate) busy: BTreeMap<String, Vec<String>>,
}

/// A loop device's backing file and the device it is on.
struct Loop {
    file: String,
    device: Option<BlockDevice>,
}

struct Surveyor<'a> {
    system: &'a dyn System,
    mounts: Vec<MountEntry>,
    loops: BTreeMap<String, Loop>,
    survey: Survey,
}

/// Finds the installer's media and the disks loop devices read from (see
/// the module docs).
pub fn survey(system: &dyn System, bundle: &Path) -> Result<Survey, InstallError> {
    let root = system.root();
    let mut loops = BTreeMap::new();
    for (name, file) in root.loop_devices()? {
        let device = match system
            .loop_backing_device(&name)
            .map_err(|e| InstallError::Medium(format!("asking {name} what it reads: {e}")))?
        {
            Some((major, minor)) => root.block_device(major, minor)?,
            None => None,
        };
        loops.insert(name, Loop { file, device });
    }
    let mut surveyor = Surveyor {
        system,
        mounts: root.mount_table()?,
        loops,
        survey: Survey::default(),
    };
    for path in SYSTEM_PATHS {
        surveyor.follow_path(path, None)?;
    }
    let bundle = std::fs::canonicalize(bundle).unwrap_or_else(|_| bundle.to_owned());
    surveyor.follow_path(&bundle.to_string_lossy(), Some("the bundle"))?;
    surveyor.kernel_cmdline(&root.kernel_cmdline()?)?;
    surveyor.loop_users();
    Ok(surveyor.survey)
}

impl Surveyor<'_> {
    fn medium(&mut self, disk: &str, why: String) {
        if !self.survey.media.iter().any(|m| m.disk == disk) {
            self.survey.media.push(InstallerMedium {
                disk: disk.to_owned(),
                why,
            });
        }
    }

    /// The disks behind `path`, each with how: `what` names the path when
    /// it is not a mount point of the running system (the bundle).
    fn follow_path(&mut self, path: &str, what: Option<&str>) -> Result<(), InstallError> {
        for (disk, how) in self.behind(path, 0)? {
            let why = match what {
                Some(what) => format!("{what} {path} is on {how}"),
                None => how,
            };
            self.medium(&disk, why);
        }
        Ok(())
    }

    /// The disks `path` is read from, and how, in words.
    fn behind(&self, path: &str, depth: usize) -> Result<Vec<(String, String)>, InstallError> {
        let Some(mount) = mount_of(&self.mounts, path) else {
            return Ok(Vec::new());
        };
        if depth > MAX_DEPTH {
            return Err(InstallError::Medium(format!(
                "{path}: overlays stacked deeper than {MAX_DEPTH}"
            )));
        }
        let layers = mount.overlay_layers();
        if !layers.is_empty() {
            let mut found = Vec::new();
            for layer in layers {
                for (disk, how) in self.behind(&layer, depth + 1)? {
                    found.push((
                        disk,
                        format!("{} is an overlay over {layer}: {how}", mount.mount_point),
                    ));
                }
            }
            return Ok(found);
        }
        let Some(device) = self.system.root().block_device(mount.major, mount.minor)? else {
            return Ok(Vec::new());
        };
        Ok(self
            .device_chain_of(&device, depth)
            .map(|(disk, device)| {
                let how = if path == mount.mount_point {
                    format!("{device} is mounted on {}", mount.mount_point)
                } else {
                    format!("{device} (mounted on {})", mount.mount_point)
                };
                (disk, how)
            })
            .into_iter()
            .collect())
    }

    /// The disk behind `device` and the device in words, through loop
    /// devices to their backing files' devices; `None` when a loop
    /// device's file is on no disk (tmpfs, the initramfs).
    fn device_chain_of(&self, device: &BlockDevice, depth: usize) -> Option<(String, String)> {
        let name = format!("/dev/{}", device.name);
        match self.loops.get(&device.name) {
            Some(backing) if depth <= MAX_DEPTH => {
                let behind = backing.device.as_ref()?;
                let (disk, how) = self.device_chain_of(behind, depth + 1)?;
                Some((
                    disk,
                    format!("{name}, whose backing file {} is on {how}", backing.file),
                ))
            }
            _ => Some((device.disk.clone(), name)),
        }
    }

    /// `root=` and `findiso=` of the kernel command line.
    fn kernel_cmdline(&mut self, cmdline: &str) -> Result<(), InstallError> {
        for word in cmdline.split_whitespace() {
            if let Some(root) = word.strip_prefix("root=") {
                self.root_device(root)?;
            } else if let Some(iso) = word.strip_prefix("findiso=") {
                self.find_iso(iso);
            }
        }
        Ok(())
    }

    fn root_device(&mut self, value: &str) -> Result<(), InstallError> {
        let spec = value.strip_prefix("live:").unwrap_or(value);
        let spec = spec
            .strip_prefix("CDLABEL=")
            .map(|label| format!("LABEL={label}"))
            .unwrap_or_else(|| spec.to_owned());
        let tagged = ["LABEL", "UUID", "PARTUUID", "PARTLABEL"]
            .into_iter()
            .find_map(|tag| Some((tag, spec.strip_prefix(tag)?.strip_prefix('=')?)));
        let name = match (tagged, spec.strip_prefix("/dev/")) {
            (Some((tag, tag_value)), _) => {
                match self
                    .system
                    .find_tag(tag, tag_value)
                    .map_err(|e| InstallError::Medium(format!("looking up root={value}: {e}")))?
                {
                    TagLookup::Device(name) => name,
                    TagLookup::Missing => {
                        info!("the kernel command line's root={value}: no device carries it now (the medium was removed after a copytoram boot?)");
                        return Ok(());
                    }
                    TagLookup::Unknown(why) => {
                        return Err(InstallError::Medium(format!(
                            "the kernel command line's root={value} names the medium the system booted from, and {why}, so nothing can tell which disk that is"
                        )))
                    }
                }
            }
            (None, Some(path)) => match path.strip_prefix("disk/by-") {
                Some(link) => {
                    let (kind, value) = link.split_once('/').unwrap_or((link, ""));
                    return self.root_device(&format!("{}={value}", kind.to_ascii_uppercase()));
                }
                None => path.to_owned(),
            },
            (None, None) => {
                info!("the kernel command line's root={value} names no local device");
                return Ok(());
            }
        };
        let chain = self
            .system
            .root()
            .block_device_named(&name)?
            .and_then(|device| self.device_chain_of(&device, 1));
        match chain {
            Some((disk, how)) => self.medium(
                &disk,
                format!("the kernel command line's root={value} is {how}"),
            ),
            None => info!("the kernel command line's root={value}: no device {name} now"),
        }
        Ok(())
    }

    /// `findiso=PATH`: the initrd found the ISO file at PATH on some disk
    /// and looped it; the loop device's backing file ends with PATH.
    fn find_iso(&mut self, iso: &str) {
        let holders: Vec<(String, String)> = self
            .loops
            .iter()
            .filter(|(_, l)| l.file.ends_with(iso))
            .filter_map(|(name, l)| {
                let device = l.device.as_ref()?;
                let (disk, how) = self.device_chain_of(device, 1)?;
                Some((disk, format!("/dev/{name} reads it from {how}")))
            })
            .collect();
        if holders.is_empty() {
            info!("the kernel command line's findiso={iso}: no loop device reads it");
        }
        for (disk, how) in holders {
            self.medium(
                &disk,
                format!("the kernel command line's findiso={iso}: {how}"),
            );
        }
    }

    /// Every loop device makes the disk it reads from busy.
    fn loop_users(&mut self) {
        for (name, l) in &self.loops {
            let Some(device) = &l.device else { continue };
            if let Some((disk, how)) = self.device_chain_of(device, 1) {
                self.survey.busy.entry(disk).or_default().push(format!(
                    "/dev/{name} reads its backing file {} from {how}",
                    l.file
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::system::tests::FakeSystem;
    use abnix_core::testutil::FakeRoot;

    /// A machine with an internal disk (sda 8:0, sda1 8:1), a USB stick
    /// (sdb 8:16, a hybrid ISO: the whole disk is the ISO 9660 filesystem,
    /// with an EFI partition sdb2 8:17) and a second internal disk (sdc
    /// 8:32, sdc1 8:33), and loop devices loop0 and loop1 (7:0, 7:1;
    /// unattached until a test attaches them).
    fn machine() -> FakeSystem {
        let root = FakeRoot::new();
        root.disk("sda", (8, 0), 1 << 25, &[("sda1", 1)]);
        root.disk("sdb", (8, 16), 1 << 22, &[("sdb2", 2)]);
        root.disk("sdc", (8, 32), 1 << 25, &[("sdc1", 1)]);
        root.disk("loop0", (7, 0), 1 << 20, &[]);
        root.disk("loop1", (7, 1), 1 << 20, &[]);
        root.write(
            "proc/cmdline",
            "init=/nix/store/x-nixos-system/init loglevel=4\n",
        );
        FakeSystem::new(root)
    }

    /// NixOS's ISO (iso-image.nix): tmpfs root, the medium on /iso, the
    /// store's squashfs looped from it, the store an overlay over that.
    fn nixos_iso_mounts(iso: &str) -> String {
        format!(
            "20 1 0:20 / / rw - tmpfs tmpfs rw,mode=755\n\
             21 20 {iso} / /iso ro - iso9660 /dev/root ro\n\
             22 20 7:0 / /nix/.ro-store ro - squashfs /dev/loop0 ro\n\
             23 20 0:23 / /nix/.rw-store rw - tmpfs tmpfs rw\n\
             24 20 0:24 / /nix/store rw - overlay overlay rw,lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,workdir=/nix/.rw-store/work\n\
             25 20 0:5 / /proc rw - proc proc rw\n"
        )
    }

    fn media(survey: &Survey) -> Vec<(&str, &str)> {
        survey
            .media
            .iter()
            .map(|m| (m.disk.as_str(), m.why.as_str()))
            .collect()
    }

    #[test]
    fn the_nixos_iso_on_a_usb_stick_is_found_by_its_mount_and_its_store() {
        let mut m = machine();
        m.files
            .write("proc/self/mountinfo", &nixos_iso_mounts("8:16"));
        m.attach_loop("loop0", "/iso/nix-store.squashfs", (8, 16));
        let survey = survey(&m, Path::new("/iso/abnix/bundle")).unwrap();
        assert_eq!(media(&survey), [("sdb", "/dev/sdb is mounted on /iso")]);
        // The other reasons are there too, for sdb alone.
        assert_eq!(
            survey.busy.get("sdb").unwrap(),
            &["/dev/loop0 reads its backing file /iso/nix-store.squashfs from /dev/sdb"]
        );
        assert_eq!(survey.busy.len(), 1);
    }

    /// The store alone says where the system comes from when nothing is on
    /// /iso (another live system that mounts its medium elsewhere).
    #[test]
    fn the_store_overlay_is_followed_through_its_loop_device() {
        let mut m = machine();
        m.files.write(
            "proc/self/mountinfo",
            "20 1 0:20 / / rw - tmpfs tmpfs rw\n\
             21 20 8:33 / /run/medium ro - vfat /dev/sdc1 ro\n\
             22 20 7:0 / /nix/.ro-store ro - squashfs /dev/loop0 ro\n\
             24 20 0:24 / /nix/store rw - overlay overlay rw,lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,workdir=/nix/.rw-store/work\n",
        );
        m.attach_loop("loop0", "/run/medium/nix-store.squashfs", (8, 33));
        let survey = survey(&m, Path::new("/tmp/elsewhere/bundle")).unwrap();
        assert_eq!(
            media(&survey),
            [(
                "sdc",
                "/nix/store is an overlay over /nix/.ro-store: /dev/loop0, whose backing file /run/medium/nix-store.squashfs is on /dev/sdc1 is mounted on /nix/.ro-store"
            )]
        );
    }

    /// `copytoram`: /iso is a tmpfs holding a copy, the squashfs is looped
    /// from that copy, the stick is mounted nowhere. The kernel command
    /// line's root=LABEL= still names it, through udev's link.
    #[test]
    fn copytoram_finds_the_stick_by_the_iso_label() {
        let mut m = machine();
        m.files
            .write("proc/self/mountinfo", &nixos_iso_mounts("0:30"));
        m.attach_loop("loop0", "/iso/nix-store.squashfs", (0, 30));
        m.files.write(
            "proc/cmdline",
            "init=/nix/store/x/init root=LABEL=ABNIX_INSTALLER copytoram\n",
        );
        m.udev_link("label", "ABNIX_INSTALLER", "sdb");
        let survey = survey(&m, Path::new("/iso/abnix/bundle")).unwrap();
        assert_eq!(
            media(&survey),
            [(
                "sdb",
                "the kernel command line's root=LABEL=ABNIX_INSTALLER is /dev/sdb"
            )]
        );
        assert!(survey.busy.is_empty(), "{:?}", survey.busy);

        // The stick pulled after the copy: nothing to protect, no error.
        std::fs::remove_file(m.files.dir.path().join("dev/disk/by-label/ABNIX_INSTALLER")).unwrap();
        assert_eq!(survey_of(&m), Vec::<String>::new());

        // No udev: findfs answers; and when nothing can, the installer
        // refuses rather than guess.
        std::fs::remove_dir_all(m.files.dir.path().join("dev/disk")).unwrap();
        m.findfs
            .insert("LABEL=ABNIX_INSTALLER".into(), "sdb".into());
        assert_eq!(survey_of(&m), ["sdb"]);
    }

    fn survey_of(m: &FakeSystem) -> Vec<String> {
        survey(m, Path::new("/iso/abnix/bundle"))
            .unwrap()
            .media
            .into_iter()
            .map(|m| m.disk)
            .collect()
    }

    /// Netboot: kernel and initrd came over the network, the store's
    /// squashfs sits in the initramfs. No disk is the medium.
    #[test]
    fn netboot_protects_no_disk() {
        let mut m = machine();
        m.files.write(
            "proc/self/mountinfo",
            "20 1 0:2 / / rw - rootfs rootfs rw\n\
             22 20 7:0 / /nix/.ro-store ro - squashfs /dev/loop0 ro\n\
             24 20 0:24 / /nix/store rw - overlay overlay rw,lowerdir=/nix/.ro-store,upperdir=/nix/.rw-store/store,workdir=/nix/.rw-store/work\n",
        );
        m.attach_loop("loop0", "/nix-store.squashfs", (0, 2));
        let survey = survey(&m, Path::new("/tmp/bundle")).unwrap();
        assert_eq!(survey, Survey::default());
    }

    /// The medium mounted somewhere else by hand, the bundle on it.
    #[test]
    fn a_medium_mounted_elsewhere_is_found_through_the_bundle() {
        let m = machine();
        m.files.write(
            "proc/self/mountinfo",
            "20 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
             30 20 8:17 / /mnt/usb\\040stick ro - vfat /dev/sdb2 ro\n",
        );
        let survey = survey(&m, Path::new("/mnt/usb stick/abnix/bundle")).unwrap();
        assert_eq!(
            media(&survey),
            [
                ("sda", "/dev/sda1 is mounted on /"),
                (
                    "sdb",
                    "the bundle /mnt/usb stick/abnix/bundle is on /dev/sdb2 (mounted on /mnt/usb stick)"
                ),
            ]
        );
    }

    /// GRUB booted the ISO file /isos/abnix.iso from sdc1 (findiso=): the
    /// initrd looped it and mounted the loop device on /iso; its own mount
    /// of sdc1 is out of this namespace's sight. The loop device's backing
    /// device says where the file is.
    #[test]
    fn findiso_finds_the_disk_holding_the_iso_file() {
        let mut m = machine();
        m.files
            .write("proc/self/mountinfo", &nixos_iso_mounts("7:1"));
        m.attach_loop("loop1", "/findiso/isos/abnix.iso", (8, 33));
        m.attach_loop("loop0", "/iso/nix-store.squashfs", (7, 1));
        m.files.write(
            "proc/cmdline",
            "init=/nix/store/x/init root=LABEL=ABNIX_INSTALLER findiso=/isos/abnix.iso\n",
        );
        m.udev_link("label", "ABNIX_INSTALLER", "loop1");
        let found = survey(&m, Path::new("/iso/abnix/bundle")).unwrap();
        assert_eq!(
            media(&found),
            [(
                "sdc",
                "/dev/loop1, whose backing file /findiso/isos/abnix.iso is on /dev/sdc1 is mounted on /iso"
            )]
        );
        let busy = &found.busy["sdc"];
        assert_eq!(busy.len(), 2, "{busy:?}");
        assert!(busy[0].starts_with("/dev/loop0 reads its backing file /iso/nix-store.squashfs from /dev/loop1, whose backing file /findiso/isos/abnix.iso is on /dev/sdc1"), "{busy:?}");

        // Only the command line left: the ISO's loop no longer mounted.
        let mut m2 = machine();
        m2.files
            .write("proc/self/mountinfo", "20 1 0:20 / / rw - tmpfs tmpfs rw\n");
        m2.attach_loop("loop1", "/findiso/isos/abnix.iso", (8, 33));
        m2.files.write("proc/cmdline", "findiso=/isos/abnix.iso\n");
        assert_eq!(
            media(&survey(&m2, Path::new("/tmp/b")).unwrap()),
            [(
                "sdc",
                "the kernel command line's findiso=/isos/abnix.iso: /dev/loop1 reads it from /dev/sdc1"
            )]
        );
    }

    /// root= as a device path or a by-* link, PARTUUID in another case, a
    /// root the installer cannot resolve at all, and forms naming no local
    /// device.
    #[test]
    fn every_form_of_root_is_resolved_or_refused() {
        let m = machine();
        m.files
            .write("proc/self/mountinfo", "20 1 0:20 / / rw - tmpfs tmpfs rw\n");
        m.udev_link("partuuid", "0fc63daf-8483-4772-8e79-3d69d8477de4", "sdc1");
        for (cmdline, disk) in [
            ("root=/dev/sda1 ro", Some("sda")),
            (
                "root=PARTUUID=0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                Some("sdc"),
            ),
            (
                "root=/dev/disk/by-partuuid/0fc63daf-8483-4772-8e79-3d69d8477de4",
                Some("sdc"),
            ),
            ("root=live:CDLABEL=NOPE", None),
            ("root=/dev/nfs nfsroot=10.0.0.1:/srv", None),
            ("root=tmpfs", None),
        ] {
            m.files.write("proc/cmdline", cmdline);
            let found = survey_of(&m);
            assert_eq!(found, disk.into_iter().collect::<Vec<_>>(), "{cmdline}");
        }

        // Without udev, a root only findfs could resolve.
        struct NoFindfs(FakeSystem);
        impl System for NoFindfs {
            fn root(&self) -> &abnix_core::blockdev::SysRoot {
                self.0.root()
            }
            fn loop_backing_device(&self, name: &str) -> std::io::Result<Option<(u32, u32)>> {
                self.0.loop_backing_device(name)
            }
            fn exclusive_access(&self, name: &str) -> std::io::Result<()> {
                self.0.exclusive_access(name)
            }
            fn find_tag(&self, _: &str, _: &str) -> std::io::Result<TagLookup> {
                Ok(TagLookup::Unknown("findfs is not installed".into()))
            }
            fn libblkid(&self) -> crate::install::libblkid::Libblkid {
                self.0.libblkid()
            }
        }
        m.files.write("proc/cmdline", "root=UUID=1234");
        let err = survey(&NoFindfs(m), Path::new("/b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the installer's medium: the kernel command line's root=UUID=1234 names the medium the system booted from, and findfs is not installed, so nothing can tell which disk that is"
        );
    }
}
