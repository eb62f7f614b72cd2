//! What the updater keeps on the ESP, where losing or corrupting the state
//! file on the rw partition cannot forget it (docs/security.md): the
//! versions that failed, the keys a recovery key revoked, and, read here,
//! each slot's signed meta that boot control keeps beside its boot files.
//!
//! Written with the power-cut rules of boot control (docs/boot.md, "Power
//! cuts"): each fact is one small file, created whole and never rewritten.
//! The FAT layer makes a create all-or-nothing, so after a power cut a
//! record exists complete or not at all; a record whose content is damaged
//! anyway still counts by its name (the failed version's number and id),
//! which is written in the same directory-entry update.
//!
//! ```text
//! abnix/failed/<version>-<id>.json   a failed version (FailedVersion as JSON)
//! abnix/revoked/<sha256 of the key>  a revoked public key (name:base64)
//! ```

use tracing::warn;
use uuid::Uuid;

use super::machine::{DiskState, KeptMeta};
use crate::state_dir::FailedVersion;
use abnix_core::boot::{esp, SlotStatus};
use abnix_core::system_disk::{SystemDisk, SystemDiskError};
use abnix_formats::digest::Digest;
use abnix_formats::disk::Disk;
use abnix_formats::fat::{FatError, FatFs};
use abnix_formats::meta::{verify_meta, VerifyError};
use abnix_formats::sign::{PublicKey, SignatureError, TrustedKeys};
use abnix_formats::slot::Slot;

const FAILED_DIR: &str = "abnix/failed";
const REVOKED_DIR: &str = "abnix/revoked";

fn failed_path(version: u64, id: Uuid) -> String {
    format!("{FAILED_DIR}/{version}-{}.json", id.hyphenated())
}

fn revoked_path(key: &PublicKey) -> String {
    format!("{REVOKED_DIR}/{}", Digest::of(key.to_string().as_bytes()))
}

/// The names of the files in `dir`; none when it does not exist.
fn files_in<D: Disk>(fs: &mut FatFs<D>, dir: &str) -> Result<Vec<String>, FatError> {
    match fs.list_dir(dir) {
        Ok(entries) => Ok(entries
            .into_iter()
            .filter(|e| !e.is_dir)
            .map(|e| e.name)
            .collect()),
        Err(FatError::NotFound(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Creates `path` with `bytes` unless a record is there already.
fn record<D: Disk>(fs: &mut FatFs<D>, dir: &str, path: &str, bytes: &[u8]) -> Result<(), FatError> {
    if fs.exists(path)? {
        return Ok(());
    }
    fs.create_dir_all(dir)?;
    fs.write_file(path, bytes)
}

/// Records `failed` (once: a version already recorded is left as it is).
pub fn record_failed<D: Disk>(fs: &mut FatFs<D>, failed: &FailedVersion) -> Result<(), FatError> {
    let json = serde_json::to_vec(failed).expect("plain data serializes");
    record(
        fs,
        FAILED_DIR,
        &failed_path(failed.version, failed.id),
        &json,
    )
}

/// The failed versions recorded, in version order. A record whose content
/// is damaged still counts by its name.
pub(crate) fn read_failed<D: Disk>(fs: &mut FatFs<D>) -> Result<Vec<FailedVersion>, FatError> {
    let mut failed = Vec::new();
    for name in files_in(fs, FAILED_DIR)? {
        let Some((version, id)) = name
            .strip_suffix(".json")
            .and_then(|stem| stem.split_once('-'))
            .and_then(|(v, id)| Some((v.parse::<u64>().ok()?, Uuid::try_parse(id).ok()?)))
        else {
            warn!("{FAILED_DIR}/{name} on the ESP is not a failed-version record; ignored");
            continue;
        };
        let bytes = fs.read_file(&format!("{FAILED_DIR}/{name}"))?;
        let record = match serde_json::from_slice::<FailedVersion>(&bytes) {
            Ok(record) if (record.version, record.id) == (version, id) => record,
            _ => {
                warn!("{FAILED_DIR}/{name} on the ESP is damaged; version {version} counts as failed by its name");
                FailedVersion {
                    version,
                    id,
                    label: String::new(),
                    at: chrono::DateTime::UNIX_EPOCH,
                    reason: "failed (its record on the ESP is damaged)".into(),
                }
            }
        };
        failed.push(record);
    }
    failed.sort_by_key(|f| f.version);
    Ok(failed)
}

/// Records `key` as revoked.
pub(crate) fn record_revoked<D: Disk>(fs: &mut FatFs<D>, key: &PublicKey) -> Result<(), FatError> {
    record(
        fs,
        REVOKED_DIR,
        &revoked_path(key),
        format!("{key}\n").as_bytes(),
    )
}

/// The keys recorded as revoked; a damaged record is ignored, with a
/// warning.
pub(crate) fn read_revoked<D: Disk>(fs: &mut FatFs<D>) -> Result<Vec<PublicKey>, FatError> {
    let mut revoked = Vec::new();
    for name in files_in(fs, REVOKED_DIR)? {
        let path = format!("{REVOKED_DIR}/{name}");
        let bytes = fs.read_file(&path)?;
        match std::str::from_utf8(&bytes).ok().map(PublicKey::parse) {
            Some(Ok(key)) => revoked.push(key),
            _ => warn!("{path} on the ESP is not a public key; ignored"),
        }
    }
    Ok(revoked)
}

/// A meta's bytes and its signature file.
pub(crate) type MetaFiles = (Vec<u8>, Vec<u8>);

/// A slot's signed meta and signature file as kept beside its boot files,
/// if both are there.
pub(crate) fn read_kept_meta<D: Disk>(
    fs: &mut FatFs<D>,
    slot: Slot,
) -> Result<Option<MetaFiles>, FatError> {
    let read = |fs: &mut FatFs<D>, path: String| match fs.read_file(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(FatError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    };
    let meta = read(fs, esp::slot_meta(slot))?;
    let signatures = read(fs, esp::slot_signatures(slot))?;
    Ok(meta.zip(signatures))
}

/// What the disk holds for a run ([`DiskState`]), and the keys the device
/// trusts now: `keys` (the config's) with the revocations recorded on the
/// ESP.
pub fn read_disk<D: Disk>(
    disk: &mut SystemDisk<D>,
    keys: &TrustedKeys,
) -> Result<(DiskState, TrustedKeys), SystemDiskError> {
    let boot = disk.boot_control()?.status()?;
    let mut fs = FatFs::open(disk.esp())?;
    let failed = read_failed(&mut fs)?;
    let revoked = read_revoked(&mut fs)?;
    let mut keys = keys.clone();
    for key in &revoked {
        keys.revoke(key.clone());
    }
    let mut kept = [KeptMeta::Unsigned, KeptMeta::Unsigned];
    for slot in Slot::ALL {
        kept[abnix_core::boot::state::slot_index(slot)] =
            kept_meta(&mut fs, boot.slot(slot), &keys)?;
    }
    let state = DiskState {
        boot,
        kept,
        failed,
        revoked,
    };
    Ok((state, keys))
}

/// How a slot's kept meta counts (see [`KeptMeta`]). Only a revoked key
/// voids it: a copy that is missing, damaged, or signed by a key the config
/// no longer lists (a completed key rotation) leaves the slot file's version
/// standing, so nothing but a revocation lowers the rollback floor.
fn kept_meta<D: Disk>(
    fs: &mut FatFs<D>,
    status: &SlotStatus,
    keys: &TrustedKeys,
) -> Result<KeptMeta, FatError> {
    let slot = status.slot;
    let Some(info) = &status.info else {
        return Ok(KeptMeta::Unsigned);
    };
    let Some((meta, signatures)) = read_kept_meta(fs, slot)? else {
        return Ok(KeptMeta::Unsigned);
    };
    Ok(match verify_meta(&meta, &signatures, keys) {
        Ok(signed) if (signed.meta().version, signed.meta().id) == (info.version, info.id) => {
            KeptMeta::Signed {
                version: info.version,
                signed_at: signed.meta().published.as_ref().map(|p| p.signed_at),
                signers: signed.signers().to_vec(),
                image: signed.meta().image.sha256,
            }
        }
        Ok(signed) => {
            warn!(
                "{} on the ESP is version {}, its slot file says {}; the slot file counts",
                esp::slot_meta(slot),
                signed.meta().version,
                info.version
            );
            KeptMeta::Unsigned
        }
        Err(VerifyError::Signature(e @ SignatureError::Revoked { .. })) => KeptMeta::Void {
            reason: format!("version {} in slot {slot} is {e}", info.version),
        },
        Err(e) => {
            warn!(
                "{} on the ESP does not verify ({e}); the slot file's version counts",
                esp::slot_meta(slot)
            );
            KeptMeta::Unsigned
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::DateTime;

    use super::*;
    use abnix_formats::disk::{Fault, FaultyDisk, Overlay};
    use abnix_formats::fat::FormatOptions;
    use abnix_formats::sign::SecretKey;

    const ESP_SIZE: usize = 40 << 20;

    fn esp() -> Overlay<Arc<Vec<u8>>> {
        let disk = Overlay::new(Arc::new(vec![0; ESP_SIZE]));
        let options = FormatOptions {
            label: "ABNIX-ESP".into(),
            volume_id: 1,
            sector_size: 512,
        };
        let fs = FatFs::format(disk, &options).unwrap();
        Overlay::new(Arc::new(fs.into_inner().to_vec().unwrap()))
    }

    fn failed(version: u64) -> FailedVersion {
        FailedVersion {
            version,
            id: Uuid::from_u128(u128::from(version)),
            label: format!("v{version}"),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            reason: "its trial in slot b failed".into(),
        }
    }

    #[test]
    fn records_round_trip_once() {
        let mut fs = FatFs::open(esp()).unwrap();
        assert_eq!(read_failed(&mut fs).unwrap(), []);
        assert_eq!(read_revoked(&mut fs).unwrap(), []);
        record_failed(&mut fs, &failed(12)).unwrap();
        record_failed(&mut fs, &failed(3)).unwrap();
        let again = FailedVersion {
            reason: "rolled back".into(),
            ..failed(3)
        };
        record_failed(&mut fs, &again).unwrap();
        assert_eq!(read_failed(&mut fs).unwrap(), [failed(3), failed(12)]);

        let key = SecretKey::generate("stolen").unwrap().public();
        record_revoked(&mut fs, &key).unwrap();
        record_revoked(&mut fs, &key).unwrap();
        assert_eq!(read_revoked(&mut fs).unwrap(), [key]);
    }

    #[test]
    fn a_damaged_failed_record_counts_by_its_name() {
        let mut fs = FatFs::open(esp()).unwrap();
        fs.create_dir_all(FAILED_DIR).unwrap();
        fs.write_file(&failed_path(7, Uuid::from_u128(7)), b"{\"vers")
            .unwrap();
        fs.write_file(&format!("{FAILED_DIR}/notes.txt"), b"x")
            .unwrap();
        let read = read_failed(&mut fs).unwrap();
        assert_eq!(
            read.iter().map(|f| (f.version, f.id)).collect::<Vec<_>>(),
            [(7, Uuid::from_u128(7))]
        );
    }

    /// A power cut at any sector written while recording leaves the record
    /// complete or absent, and the ESP readable.
    #[test]
    fn a_record_survives_power_cuts() {
        let base = {
            let mut fs = FatFs::open(esp()).unwrap();
            record_failed(&mut fs, &failed(2)).unwrap();
            fs.into_inner().to_vec().unwrap()
        };
        let total = {
            let disk = FaultyDisk::counting(Overlay::new(Arc::new(base.clone())));
            let counter = disk.counter();
            let mut fs = FatFs::open(disk).unwrap();
            record_failed(&mut fs, &failed(3)).unwrap();
            let bytes = counter.lock().unwrap().bytes;
            bytes
        };
        assert!(total > 0);
        for cut in (0..total).step_by(512) {
            let disk = FaultyDisk::failing_after(
                Overlay::new(Arc::new(base.clone())),
                cut,
                Fault::PowerCut,
            );
            let mut fs = FatFs::open(disk).unwrap();
            let _ = record_failed(&mut fs, &failed(3));
            let after = fs.into_inner().into_inner();
            let mut fs = FatFs::open(after).unwrap();
            let read = read_failed(&mut fs).unwrap();
            assert!(
                read == [failed(2)] || read == [failed(2), failed(3)],
                "cut at {cut}: {read:?}"
            );
        }
    }
}
