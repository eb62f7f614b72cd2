//! Delta updates in the update cycle, through the real binary: versions that
//! share most of their image download only what changed, counted at the
//! proxy, and the slot ends up holding the new image byte for byte.

mod common;

use std::fs;
use std::path::PathBuf;

use abnix_core::disk;
use abnix_core::slot::Slot;
use abnix_core::system_disk::SystemDisk;
use abnix_testkit::images::seeded_random;
use common::{assert_exit, stderr, Device, Fleet, Version, MIB};

const IMAGE_SIZE: u64 = 12 * MIB;

/// A version of a host: 8 MiB of files every version shares, and one
/// directory of its own.
fn version(fleet: &Fleet, number: u64, shared: &[u8]) -> Version {
    let own = seeded_random(256 * 1024, 100 + number);
    fleet.version_with_files(
        number,
        IMAGE_SIZE,
        &[("usr/lib/shared.bin", shared), ("usr/share/app/data", &own)],
    )
}

/// The raw image the version was packed from.
fn raw_image(version: &Version) -> Vec<u8> {
    fs::read(version.bundle.dir.parent().unwrap().join("root.ext4")).unwrap()
}

/// The first `len` bytes of `slot` on the device's disk.
fn slot_bytes(device: &Device, slot: Slot, len: usize) -> Vec<u8> {
    let file = fs::File::options()
        .read(true)
        .write(true)
        .open(&device.disk)
        .unwrap();
    let mut disk = SystemDisk::open(file, 512).unwrap();
    let mut bytes = vec![0; len];
    disk::read_at(&mut disk.slot_region(slot), 0, &mut bytes).unwrap();
    bytes
}

fn kept_index(device: &Device, version: &Version) -> PathBuf {
    device
        .state_dir
        .join("index")
        .join(&version.bundle.signed.meta().index.object)
}

/// Paths of the GETs the device made since the proxy's record was cleared.
fn gets(fleet: &Fleet) -> Vec<String> {
    fleet
        .proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.path_only().to_owned())
        .collect()
}

/// How many times the bucket served `version`'s index.
fn index_gets(fleet: &Fleet, version: &Version) -> usize {
    let index = &version.bundle.signed.meta().index.object;
    gets(fleet).iter().filter(|p| p.ends_with(index)).count()
}

/// A device running v1 from slot A, and v1 and v2 (sharing 8 MiB of
/// files, `shared`) in the bucket.
fn v1_installed_and_v2_published() -> (Fleet, Vec<u8>, Version, Version, Device) {
    let fleet = Fleet::new();
    let shared = seeded_random(8 * MIB as usize, 1);
    let v1 = version(&fleet, 1, &shared);
    let v2 = version(&fleet, 2, &shared);
    let device = Device::install(&fleet, &v1, "never");
    fleet.publish(&v1);
    fleet.publish(&v2);
    (fleet, shared, v1, v2, device)
}

#[test]
fn an_update_sharing_most_content_downloads_a_fraction_of_the_image() {
    let (fleet, shared, v1, v2, device) = v1_installed_and_v2_published();

    fleet.proxy.clear_requests();
    let out = device.run(Slot::A, "update", &[]);
    assert_exit(&out, 4);
    let downloaded = fleet.proxy.body_bytes();
    let full = v2.bundle.signed.meta().image.compressed_size;
    assert!(
        downloaded * 5 < full,
        "downloaded {downloaded} bytes for an image of {full} compressed\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("copied from the active slot"),
        "{}",
        stderr(&out)
    );
    // The installer keeps no index: v1's comes from the bucket, once.
    assert_eq!(index_gets(&fleet, &v1), 1, "{:?}", gets(&fleet));
    let image = raw_image(&v2);
    assert_eq!(slot_bytes(&device, Slot::B, image.len()), image);
    assert!(kept_index(&device, &v1).exists());
    assert!(kept_index(&device, &v2).exists());

    assert_eq!(device.power_on(), Slot::B);
    assert_exit(&device.run(Slot::B, "mark-good", &[]), 0);
    let status = device.status(Slot::B);
    assert_eq!(status["slots"][1]["state"], "good");
    assert_eq!(status["slots"][1]["version"], 2);

    // The next update reads v2 from slot b by the index kept on the device:
    // no request for it.
    let v3 = version(&fleet, 3, &shared);
    fleet.publish(&v3);
    fleet.proxy.clear_requests();
    let out = device.run(Slot::B, "update", &[]);
    assert_exit(&out, 4);
    assert_eq!(index_gets(&fleet, &v2), 0, "{:?}", gets(&fleet));
    assert!(fleet.proxy.body_bytes() * 5 < v3.bundle.signed.meta().image.compressed_size);
    let image = raw_image(&v3);
    assert_eq!(slot_bytes(&device, Slot::A, image.len()), image);
    // Only the indexes of the versions in the slots are kept.
    assert!(!kept_index(&device, &v1).exists());
    assert!(kept_index(&device, &v2).exists());
    assert!(kept_index(&device, &v3).exists());
}

#[test]
fn a_damaged_stored_index_is_fetched_again_from_the_bucket() {
    let (fleet, _, v1, v2, device) = v1_installed_and_v2_published();
    // v1's index kept on the device, cut short.
    let stored = kept_index(&device, &v1);
    let good = fs::read(v1.bundle.path_of(&v1.bundle.signed.meta().index)).unwrap();
    fs::create_dir_all(stored.parent().unwrap()).unwrap();
    fs::write(&stored, &good[..good.len() - 1]).unwrap();

    fleet.proxy.clear_requests();
    let out = device.run(Slot::A, "update", &[]);
    assert_exit(&out, 4);
    let log = stderr(&out);
    assert!(
        log.contains("the stored index of the active version is unusable; asking the bucket"),
        "{log}"
    );
    assert_eq!(index_gets(&fleet, &v1), 1, "{:?}", gets(&fleet));
    // The bucket's index served the delta, and replaced the damaged one.
    assert!(log.contains("copied from the active slot"), "{log}");
    assert!(fleet.proxy.body_bytes() * 5 < v2.bundle.signed.meta().image.compressed_size);
    assert_eq!(fs::read(&stored).unwrap(), good);
    let image = raw_image(&v2);
    assert_eq!(slot_bytes(&device, Slot::B, image.len()), image);
}
