//! Boot control (DESIGN §5): which slot boots next, and the files on the ESP
//! that make a slot bootable.
//!
//! One trait, [`BootControl`], two backends, each in its own folder with both
//! its install and its runtime side; which one a disk gets is the
//! installer's [`BootloaderSetup`], which one it has is a [`Bootloader`]:
//!
//! - **GRUB** ([`grub`], BIOS and UEFI): `grub.cfg` ([`grub::cfg`]) is
//!   written once at install; the state lives in a 512-byte GRUB environment
//!   block ([`grub::env`]) holding the [`BootState`] ([`state`]). GRUB itself
//!   counts a trial slot's tries down. BIOS boot code is installed without
//!   `grub-install` ([`grub::bios`], [`grub::mkimage`]).
//! - **systemd-boot** ([`systemd_boot`], UEFI): one Boot Loader
//!   Specification entry per activated slot, the state in its file name
//!   ([`systemd_boot::bls`]); systemd-boot counts tries down by renaming the
//!   entry.
//!
//! Both keep each slot's kernel and initrd under `abnix/<slot>/` on the ESP
//! ([`esp`]) together with its slot file (`slotinfo`), which is written
//! last and removed first: a slot whose slot file exists has complete boot
//! files, and both bootloaders only boot such slots. The write order that
//! makes every power cut safe is explained in docs/boot.md.

use std::io::{self, Read};

pub mod efi;
pub mod esp;
mod files;
pub mod grub;
#[cfg(any(test, feature = "testutil"))]
pub mod model;
mod setup;
pub(crate) mod slotinfo;
pub mod state;
pub mod systemd_boot;
#[cfg(test)]
mod tests;

pub use efi::EfiApp;
pub use grub::{GrubBoot, GrubInstall};
pub use setup::{BootPayload, Bootloader, BootloaderError, BootloaderSetup};
pub use slotinfo::SlotInfo;
pub use state::{BootState, SlotFiles, SlotState, MAX_TRIES};
pub use systemd_boot::SystemdBoot;

use crate::pipeline::VerifiedImage;
use abnix_formats::digest::{Expected, Mismatch, VerifyingReader};
use abnix_formats::fat::FatError;
use abnix_formats::meta::{Artifact, SignedMeta};
use abnix_formats::slot::Slot;

/// One slot as the bootloader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    /// What the bootloader will do with the slot. A slot without complete
    /// boot files is reported [`SlotState::Bad`] whatever the stored state,
    /// because no bootloader boots it.
    pub state: SlotState,
    /// The version of its boot files; `None` when they are not complete.
    pub info: Option<SlotInfo>,
}

/// The boot state of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootStatus {
    /// The slot the bootloader boots at the next boot (barring a kernel
    /// that fails to load); `None` when no slot has complete boot files.
    pub next: Option<Slot>,
    pub slots: [SlotStatus; 2],
}

impl BootStatus {
    pub fn slot(&self, slot: Slot) -> &SlotStatus {
        &self.slots[state::slot_index(slot)]
    }

    /// The other slot, if its trial failed and the machine came back on
    /// `booted` (read from `abnix.slot=`): it was on trial and has no tries
    /// left. The updater remembers its version as failed.
    pub fn failed_trial(&self, booted: Slot) -> Option<&SlotStatus> {
        let other = self.slot(booted.other());
        (other.state == SlotState::Trial { tries_left: 0 }).then_some(other)
    }
}

/// The boot files of a version, to be written into a slot: its slot file,
/// its kernel and initrd as readers that are checked against what the
/// version's meta expects, and the signed meta itself, kept beside them.
///
/// The readers are [`VerifyingReader`]s, and [`BootControl::write_boot_files`]
/// takes them by value: it calls their `finish()` before it writes the slot
/// file that makes the slot's files complete, so a kernel or initrd that
/// differs from what was expected (even by a byte, at the right length)
/// never gets one.
pub struct BootFiles<'a> {
    info: SlotInfo,
    kernel: VerifyingReader<&'a mut dyn Read>,
    initrd: VerifyingReader<&'a mut dyn Read>,
    signed: Option<SignedFiles>,
}

/// A signed meta and its signature file, as kept on the ESP.
pub(crate) struct SignedFiles {
    meta: Vec<u8>,
    signatures: Vec<u8>,
}

impl SignedFiles {
    fn of(signed: &SignedMeta) -> SignedFiles {
        SignedFiles {
            meta: signed.bytes().to_vec(),
            signatures: signed.signatures().to_vec(),
        }
    }
}

impl<'a> BootFiles<'a> {
    /// Boot files checked against `kernel`'s and `initrd`'s expectations,
    /// without a signed meta (tests, the installer's trial of the ESP).
    pub fn new(
        info: SlotInfo,
        kernel: VerifyingReader<&'a mut dyn Read>,
        initrd: VerifyingReader<&'a mut dyn Read>,
    ) -> BootFiles<'a> {
        BootFiles {
            info,
            kernel,
            initrd,
            signed: None,
        }
    }

    /// The boot files of the version `signed` names, whose image was
    /// written and verified (`image`): the slot file from the signed meta
    /// (so the command line is the signed one), the kernel and initrd
    /// checked against the meta's sizes and SHA-256, and the meta kept
    /// beside them.
    pub fn of_version(
        signed: &SignedMeta,
        image: &VerifiedImage,
        kernel: &'a mut dyn Read,
        initrd: &'a mut dyn Read,
    ) -> Result<BootFiles<'a>, BootError> {
        let meta = signed.meta();
        if (image.size(), image.sha256()) != (meta.image.size, meta.image.sha256) {
            return Err(BootError::ImageNotVerified {
                version: meta.version,
            });
        }
        let expected = |artifact: &Artifact| {
            Expected::new(
                format!("object {}", artifact.object),
                artifact.size,
                artifact.sha256,
            )
        };
        Ok(BootFiles {
            info: SlotInfo::of(meta),
            kernel: VerifyingReader::new(kernel, expected(&meta.kernel)),
            initrd: VerifyingReader::new(initrd, expected(&meta.initrd)),
            signed: Some(SignedFiles::of(signed)),
        })
    }

    /// The same files, keeping `signed` beside them: for a trial of the
    /// room they take, whose kernel and initrd are stand-ins.
    pub fn keeping(mut self, signed: &SignedMeta) -> BootFiles<'a> {
        self.signed = Some(SignedFiles::of(signed));
        self
    }

    fn info(&self) -> &SlotInfo {
        &self.info
    }

    fn kernel_len(&self) -> u64 {
        self.kernel.expected().len
    }

    fn initrd_len(&self) -> u64 {
        self.initrd.expected().len
    }
}

/// Why a boot control operation failed. Every operation checks before it
/// writes, so only an I/O failure ([`BootError::Io`], or
/// [`FatError::Io`] inside [`BootError::Fat`]) can stop one halfway, and
/// that leaves a disk that boots like a power cut would.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("slot {0} has no complete boot files")]
    NotComplete(Slot),
    #[error("slot {0} still has boot files; mark it bad before writing new ones")]
    NotMarkedBad(Slot),
    #[error(transparent)]
    Transition(#[from] state::TransitionError),
    #[error("not enough room on the ESP for the boot files of slot {slot}: {needed} bytes needed, {free} free")]
    NoRoom { slot: Slot, needed: u64, free: u64 },
    #[error(transparent)]
    SlotInfo(#[from] slotinfo::SlotInfoError),
    #[error(transparent)]
    Cmdline(#[from] grub::cfg::CmdlineError),
    #[error(transparent)]
    Bls(#[from] systemd_boot::bls::BlsError),
    #[error("{path} on the ESP: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path} on the ESP does not read back as written")]
    Verify { path: String },
    #[error("not written to the ESP: {0}")]
    Unverified(#[from] Mismatch),
    #[error("the image of version {version} was not verified against its meta: its boot files are not written")]
    ImageNotVerified { version: u64 },
    #[error(transparent)]
    Bios(#[from] grub::bios::BiosError),
    #[error(transparent)]
    Fat(#[from] FatError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Boot control of a machine's ESP.
///
/// An update runs, in this order (DESIGN §5): [`check_boot_files`] (nothing
/// changes if the new version cannot be installed), [`mark_bad`] on the
/// slot to rewrite, writing and verifying its image, [`write_boot_files`],
/// [`activate`]. After the reboot, the healthy new slot calls
/// [`mark_good`]. Every method syncs the ESP before it returns, and a power
/// cut at any instant during any of them leaves a disk that boots a slot
/// with complete boot files and that [`status`] describes correctly.
///
/// [`check_boot_files`]: BootControl::check_boot_files
/// [`mark_bad`]: BootControl::mark_bad
/// [`write_boot_files`]: BootControl::write_boot_files
/// [`activate`]: BootControl::activate
/// [`mark_good`]: BootControl::mark_good
/// [`status`]: BootControl::status
pub trait BootControl {
    /// The state of both slots and which one boots first.
    fn status(&mut self) -> Result<BootStatus, BootError>;

    /// Fails if `slot` could not take these boot files: fields this
    /// bootloader cannot carry (e.g. a command line GRUB would alter), or
    /// too little room on the ESP once the slot's current files are gone.
    fn check_boot_files(
        &mut self,
        slot: Slot,
        info: &SlotInfo,
        kernel_len: u64,
        initrd_len: u64,
    ) -> Result<(), BootError>;

    /// Before `slot` is rewritten: the bootloader must never pick it again
    /// until it is activated. Its boot files are removed, slot file first.
    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError>;

    /// Writes the kernel, initrd, the signed meta if any and, last, the slot
    /// file of `slot`, which was marked bad; the slot file only once the
    /// kernel and initrd proved to be what was expected (see [`BootFiles`]).
    /// The slot does not boot until [`activate`]d.
    ///
    /// [`activate`]: BootControl::activate
    fn write_boot_files(&mut self, slot: Slot, files: BootFiles<'_>) -> Result<(), BootError>;

    /// `slot`, whose boot files are complete, becomes the trial slot that
    /// boots next, with `tries` attempts (1 to [`MAX_TRIES`]) before the
    /// bootloader falls back to the other slot.
    fn activate(&mut self, slot: Slot, tries: u8) -> Result<(), BootError>;

    /// `slot`, the running one, proved healthy: it becomes good and keeps
    /// booting.
    fn mark_good(&mut self, slot: Slot) -> Result<(), BootError>;

    /// Operator rollback: the good `slot` boots next; the other slot stays
    /// as the fallback.
    fn prefer(&mut self, slot: Slot) -> Result<(), BootError>;
}
