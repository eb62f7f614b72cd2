//! Power cuts in every mutation, at every sector.
//!
//! Each case runs its operation once on a [`FaultyDisk`] that only counts,
//! then again from the same base image with the power cut after every
//! sector-aligned number of bytes (a dense sample for large files): every
//! write abnix makes is whole sectors, so these are exactly the states a
//! cut can leave on a disk that writes sectors atomically — the assumption
//! the design rests on. After each cut:
//! - the volume opens, and the files not involved read back unchanged;
//! - the file involved is wholly old or wholly new (or, for the cases that
//!   allow it, in the one documented in-between state), and the states
//!   follow each other in that order as the cut moves later;
//! - `fsck.fat -n` reports nothing but lost clusters, FATs that differ (in
//!   lost clusters) and a stale free count — plus, in the rename window,
//!   the two names sharing clusters;
//! - after `reclaim_lost_clusters`, `fsck.fat -n` is clean.
//!
//! A coarser sweep at byte granularity (a disk that tears sectors) checks
//! the weaker promise that holds even then: the volume opens and the other
//! files are intact.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::*;
use crate::disk::{Fault, FaultyDisk};
use crate::fat::FatError;

/// A populated base image, a scratch copy that fsck reads (patched with a
/// run's pages, then restored), and the files no case may disturb.
struct Image {
    _dir: tempfile::TempDir,
    base: File,
    work_path: PathBuf,
    work: File,
    sector: u64,
    bystanders: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn new(
        size: u64,
        sector_size: u32,
        populate: impl FnOnce(&mut FatFs<&mut File>) -> Vec<(String, Vec<u8>)>,
    ) -> Self {
        let (dir, base_path, mut file) = sparse_file(size);
        let mut fs = FatFs::format(&mut file, &options(sector_size)).unwrap();
        let bystanders = populate(&mut fs);
        drop(fs);
        let work_path = dir.path().join("work.img");
        let out = Command::new("cp")
            .args([
                "--sparse=always",
                base_path.to_str().unwrap(),
                work_path.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let work = File::options()
            .read(true)
            .write(true)
            .open(&work_path)
            .unwrap();
        Image {
            _dir: dir,
            base: file,
            work_path,
            work,
            sector: u64::from(sector_size),
            bystanders,
        }
    }

    /// Runs fsck on the base image with `cow`'s pages applied.
    fn fsck_with(&self, cow: &Cow) -> Fsck {
        for (index, page) in cow.pages() {
            self.work.write_all_at(page, index * PAGE).unwrap();
        }
        let report = fsck(&self.work_path);
        let mut original = vec![0u8; PAGE as usize];
        for index in cow.pages().keys() {
            self.base
                .read_exact_at(&mut original, index * PAGE)
                .unwrap();
            self.work.write_all_at(&original, index * PAGE).unwrap();
        }
        report
    }

    fn check_bystanders<D: Disk>(&self, fs: &mut FatFs<D>, when: &str) {
        for (path, data) in &self.bystanders {
            assert_eq!(
                &fs.read_file(path)
                    .unwrap_or_else(|e| panic!("{when}: {path}: {e}")),
                data,
                "{when}: {path}"
            );
        }
    }

    /// Bytes the operation writes when nothing fails.
    fn bytes_written(&self, op: &Operation<'_>) -> u64 {
        let mut cow = Cow::new(&self.base);
        cow.require_sector_writes(self.sector);
        let mut fs = FatFs::open(FaultyDisk::counting(cow)).unwrap();
        op(&mut fs).unwrap();
        fs.into_inner().written().bytes
    }

    /// The image after `op` with the power cut after `budget` bytes.
    fn cut(&self, op: &Operation<'_>, budget: u64) -> Cow<'_> {
        let disk = FaultyDisk::failing_after(Cow::new(&self.base), budget, Fault::PowerCut);
        let mut fs = FatFs::open(disk).unwrap();
        // Writes after the cut vanish silently, so the operation runs on;
        // whatever it returns, what counts is what reached the disk.
        let _ = op(&mut fs);
        fs.into_inner().into_inner()
    }
}

/// A mutation under test, run on a disk that may lose power.
type Operation<'a> = dyn Fn(&mut FatFs<FaultyDisk<Cow>>) -> Result<(), FatError> + 'a;

/// What a cut left of the file (or files) under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum State {
    Old,
    /// Only where the case allows it: both names of a rename, or some of
    /// the directories of a create_dir_all.
    Between,
    New,
}

struct Case<'a> {
    name: &'a str,
    op: &'a Operation<'a>,
    /// Classifies the file under test, panicking on anything not allowed.
    state: &'a dyn Fn(&mut FatFs<Cow>) -> State,
    /// Whether the Between state must show up: it lies between two syncs.
    /// In it two names share clusters if `shared_between`.
    expect_between: bool,
    /// In the Between state two names share clusters (the rename window).
    shared_between: bool,
    /// Budgets within this many bytes of the end are all tried; before
    /// that, a sample of 40.
    dense_tail: u64,
}

fn tolerated_after_cut(line: &str) -> bool {
    line.starts_with("Reclaimed ")
        || line.starts_with("Free cluster summary wrong")
        || line == "  Auto-correcting."
        || line == "FATs differ but appear to be intact."
        || line == "  Using first FAT."
}

/// fsck's report on two entries that start at the same cluster.
fn tolerated_in_rename_window(line: &str) -> bool {
    line.starts_with('/')
        || line == "  share clusters."
        || line.starts_with("  Truncating")
        || line.starts_with("  File size is")
}

fn budgets(total: u64, sector: u64, dense_tail: u64) -> Vec<u64> {
    let dense_from = total.saturating_sub(dense_tail) / sector * sector;
    let step = (dense_from / 40).max(sector) / sector * sector;
    let mut budgets: Vec<u64> = (0..dense_from).step_by(step as usize).collect();
    budgets.extend((dense_from..=total).step_by(sector as usize));
    budgets
}

fn sweep(image: &Image, case: &Case) {
    let mut seen = Vec::new();
    let total = image.bytes_written(case.op);
    assert_eq!(
        total % image.sector,
        0,
        "{}: every write is whole sectors",
        case.name
    );
    let mut last = State::Old;
    for budget in budgets(total, image.sector, case.dense_tail) {
        let when = format!("{}, cut after {budget} of {total} bytes", case.name);
        let cow = image.cut(case.op, budget);
        let report = image.fsck_with(&cow);
        let mut fs = FatFs::open(cow).unwrap_or_else(|e| panic!("{when}: open: {e}"));
        let state = (case.state)(&mut fs);
        assert!(state >= last, "{when}: {state:?} after {last:?}");
        if budget == 0 {
            assert_eq!(state, State::Old, "{when}");
        }
        if budget == total {
            assert_eq!(state, State::New, "{when}");
        }
        last = state;
        seen.push(state);
        image.check_bystanders(&mut fs, &when);
        let in_window = case.shared_between && state == State::Between;
        let unexpected: Vec<&String> = report
            .problems
            .iter()
            .filter(|line| {
                !(tolerated_after_cut(line) || in_window && tolerated_in_rename_window(line))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "{when}: fsck.fat -n: {:?}",
            report.problems
        );

        fs.reclaim_lost_clusters()
            .unwrap_or_else(|e| panic!("{when}: reclaim: {e}"));
        assert_eq!(
            (case.state)(&mut fs),
            state,
            "{when}: reclaiming changed the file"
        );
        image.check_bystanders(&mut fs, &format!("{when}, reclaimed"));
        let report = image.fsck_with(&fs.into_inner());
        if in_window {
            assert!(
                report
                    .problems
                    .iter()
                    .all(|l| tolerated_in_rename_window(l)),
                "{when}: {:?}",
                report.problems
            );
        } else {
            assert!(
                report.is_clean(),
                "{when}, reclaimed: fsck.fat -n: {:?}",
                report.problems
            );
        }
    }
    assert_eq!(
        seen.contains(&State::Between),
        case.expect_between,
        "{}: states seen {seen:?}",
        case.name
    );
}

/// The weaker promise with sectors torn at any byte: the volume opens, the
/// other files are intact and everything else reads or fails cleanly.
fn torn_sweep(image: &Image, case: &Case) {
    let total = image.bytes_written(case.op);
    for budget in (0..total).step_by(13) {
        let when = format!("{}, torn after {budget} of {total} bytes", case.name);
        let mut fs =
            FatFs::open(image.cut(case.op, budget)).unwrap_or_else(|e| panic!("{when}: open: {e}"));
        image.check_bystanders(&mut fs, &when);
        // A torn entry can read as a name no path can spell, or point at
        // clusters that do not fit its size.
        match read_tree(&mut fs, "") {
            Ok(_) | Err(FatError::Corrupt(_) | FatError::InvalidName(_)) => {}
            Err(e) => panic!("{when}: {e}"),
        }
    }
}

/// A file that must be absent (Old) or hold exactly `data` (New).
fn created(path: &'static str, data: Vec<u8>) -> impl Fn(&mut FatFs<Cow>) -> State {
    move |fs| match fs.read_file(path) {
        Err(FatError::NotFound(_)) => State::Old,
        Ok(read) if read == data => State::New,
        other => panic!("{path}: {:?}", other.map(|d| d.len())),
    }
}

/// A file renamed from `old` to `new` with contents `data`: under one name,
/// or under both in the rename window.
fn renamed(
    old: &'static str,
    new: &'static str,
    data: Vec<u8>,
) -> impl Fn(&mut FatFs<Cow>) -> State {
    move |fs| {
        let mut read = |path| match fs.read_file(path) {
            Err(FatError::NotFound(_)) => false,
            Ok(read) => {
                assert_eq!(read, data, "{path}");
                true
            }
            Err(e) => panic!("{path}: {e}"),
        };
        match (read(old), read(new)) {
            (true, false) => State::Old,
            (true, true) => State::Between,
            (false, true) => State::New,
            (false, false) => panic!("neither {old} nor {new}"),
        }
    }
}

fn removed(path: &'static str) -> impl Fn(&mut FatFs<Cow>) -> State {
    move |fs| {
        if fs.exists(path).unwrap() {
            State::Old
        } else {
            State::New
        }
    }
}

const OLD_ENV: u64 = 1;
const NEW_ENV: u64 = 2;

/// A 40 MiB volume with 512-byte sectors and clusters: the smallest FAT32
/// worth having, so every sweep is quick.
fn small_image() -> Image {
    Image::new(40 * MIB, 512, |fs| {
        let mut bystanders = vec![
            ("keep/a.bin".to_string(), pattern(3000, 100)),
            ("keep/one".to_string(), vec![1]),
            ("loader/loader.conf".to_string(), b"timeout 0\n".to_vec()),
            (
                "loader/entries/abnix-a-1-0123456789+3.conf".to_string(),
                b"title a\n".to_vec(),
            ),
            (
                "loader/entries/abnix-b-2-0123456789+2-1.conf".to_string(),
                b"title b\n".to_vec(),
            ),
            ("loader/entries/s.conf".to_string(), b"title s\n".to_vec()),
            ("grub/grubenv".to_string(), pattern(512, OLD_ENV)),
            ("doomed-small".to_string(), pattern(700, 101)),
            ("doomed-big".to_string(), pattern(MIB as usize, 102)),
        ];
        for i in 0..7 {
            bystanders.push((format!("full/file {i}"), pattern(600, 110 + i)));
            bystanders.push((format!("packed/file {i}"), pattern(10, 120 + i)));
        }
        for dir in [
            "keep",
            "loader/entries",
            "grub",
            "full",
            "packed",
            "abnix/b",
            "emptydir",
        ] {
            fs.create_dir_all(dir).unwrap();
        }
        for (path, data) in &bystanders {
            fs.write_file(path, data).unwrap();
        }
        bystanders
    })
}

/// The entries a case changes, dropped from the image's bystanders.
fn without(mut image: Image, involved: &[&str]) -> Image {
    image
        .bystanders
        .retain(|(path, _)| !involved.contains(&path.as_str()));
    image
}

#[test]
fn creates_survive_power_cuts() {
    let image = small_image();
    let small = pattern(300, 1);
    sweep(
        &image,
        &Case {
            name: "create a small file",
            op: &|fs| fs.write_file("loader/entries/abnix-c+3.conf", &small),
            state: &created("loader/entries/abnix-c+3.conf", small.clone()),
            expect_between: false,
            shared_between: false,
            dense_tail: u64::MAX,
        },
    );
    let big = pattern(MIB as usize, 2);
    sweep(
        &image,
        &Case {
            name: "create a 1 MiB file",
            op: &|fs| fs.write_file("abnix/b/initrd", &big),
            state: &created("abnix/b/initrd", big.clone()),
            expect_between: false,
            shared_between: false,
            dense_tail: 64 * 512,
        },
    );
    let data = pattern(100, 3);
    sweep(
        &image,
        &Case {
            name: "create in a full directory",
            op: &|fs| fs.write_file("packed/a new file", &data),
            state: &created("packed/a new file", data.clone()),
            expect_between: false,
            shared_between: false,
            dense_tail: u64::MAX,
        },
    );
    sweep(
        &image,
        &Case {
            name: "create_dir_all",
            op: &|fs| fs.create_dir_all("abnix/c/deep"),
            state: &|fs| match (fs.exists("abnix/c").unwrap(), fs.list_dir("abnix/c/deep")) {
                (false, _) => State::Old,
                (true, Err(FatError::NotFound(_))) => State::Between,
                (true, Ok(listing)) if listing.is_empty() => State::New,
                other => panic!("{other:?}"),
            },
            expect_between: true,
            shared_between: false,
            dense_tail: u64::MAX,
        },
    );
}

#[test]
fn overwrites_survive_power_cuts() {
    let image = without(small_image(), &["grub/grubenv"]);
    let (old, new) = (pattern(512, OLD_ENV), pattern(512, NEW_ENV));
    sweep(
        &image,
        &Case {
            name: "overwrite a 512-byte environment block",
            op: &|fs| fs.overwrite_file("grub/grubenv", &new),
            state: &|fs| match fs.read_file("grub/grubenv").unwrap() {
                read if read == old => State::Old,
                read if read == new => State::New,
                _ => panic!("grubenv is neither old nor new"),
            },
            expect_between: false,
            shared_between: false,
            dense_tail: u64::MAX,
        },
    );
}

#[test]
fn renames_survive_power_cuts() {
    let image = without(
        small_image(),
        &[
            "loader/entries/abnix-a-1-0123456789+3.conf",
            "loader/entries/abnix-b-2-0123456789+2-1.conf",
            "loader/entries/s.conf",
            "full/file 3",
        ],
    );
    let cases = [
        (
            "longer to shorter",
            "loader/entries/abnix-a-1-0123456789+3.conf",
            "loader/entries/abnix-a-1-0123456789.conf",
            "title a\n",
            false,
        ),
        (
            "equal lengths",
            "loader/entries/abnix-b-2-0123456789+2-1.conf",
            "loader/entries/abnix-b-2-0123456789+1-2.conf",
            "title b\n",
            false,
        ),
        (
            "shorter to longer, within the sector",
            "loader/entries/s.conf",
            "loader/entries/s with a longer name.conf",
            "title s\n",
            false,
        ),
        (
            "shorter to longer, by a new set",
            "full/file 3",
            "full/file 3 with a much longer name",
            "",
            true,
        ),
    ];
    for (name, from, to, data, shared_between) in cases {
        let data = if data.is_empty() {
            pattern(600, 113)
        } else {
            data.as_bytes().to_vec()
        };
        let case = Case {
            name: &format!("rename {name}"),
            op: &|fs| fs.rename(from, to),
            state: &renamed(from, to, data),
            expect_between: shared_between,
            shared_between,
            dense_tail: u64::MAX,
        };
        sweep(&image, &case);
        if name == "longer to shorter" {
            torn_sweep(&image, &case);
        }
    }
}

#[test]
fn removes_survive_power_cuts() {
    let image = without(small_image(), &["doomed-small", "doomed-big"]);
    let cases: [(&str, &'static str, u64); 3] = [
        ("remove a small file", "doomed-small", u64::MAX),
        ("remove a 1 MiB file", "doomed-big", u64::MAX),
        ("remove an empty directory", "emptydir", u64::MAX),
    ];
    for (name, path, dense_tail) in cases {
        let case = Case {
            name,
            op: &|fs| fs.remove(path),
            state: &removed(path),
            expect_between: false,
            shared_between: false,
            dense_tail,
        };
        sweep(&image, &case);
        if path == "doomed-small" {
            torn_sweep(&image, &case);
        }
    }
}

#[test]
fn torn_sectors_in_a_create_leave_a_volume_that_opens() {
    let image = small_image();
    let data = pattern(300, 1);
    torn_sweep(
        &image,
        &Case {
            name: "create a small file",
            op: &|fs| fs.write_file("loader/entries/abnix-c+3.conf", &data),
            state: &created("loader/entries/abnix-c+3.conf", data.clone()),
            expect_between: false,
            shared_between: false,
            dense_tail: 0,
        },
    );
}

#[test]
fn mutations_on_4k_sectors_survive_power_cuts() {
    let image = Image::new(280 * MIB, 4096, |fs| {
        let mut bystanders = vec![("keep".to_string(), pattern(9000, 200))];
        fs.create_dir_all("full").unwrap();
        // "." and ".." and 63 two-slot sets fill a 128-slot sector.
        for i in 0..63 {
            bystanders.push((format!("full/f{i}"), pattern(i, 210 + i as u64)));
        }
        for (path, data) in &bystanders {
            fs.write_file(path, data).unwrap();
        }
        bystanders
    });
    let image = without(image, &["full/f7"]);
    let data = pattern(5000, 1);
    sweep(
        &image,
        &Case {
            name: "4K: create",
            op: &|fs| fs.write_file("new", &data),
            state: &created("new", data.clone()),
            expect_between: false,
            shared_between: false,
            dense_tail: u64::MAX,
        },
    );
    sweep(
        &image,
        &Case {
            name: "4K: rename by a new set",
            op: &|fs| fs.rename("full/f7", "full/f7 renamed to something much longer"),
            state: &renamed(
                "full/f7",
                "full/f7 renamed to something much longer",
                pattern(7, 217),
            ),
            expect_between: true,
            shared_between: true,
            dense_tail: u64::MAX,
        },
    );
    sweep(
        &image,
        &Case {
            name: "4K: remove",
            op: &|fs| fs.remove("full/f7"),
            state: &removed("full/f7"),
            expect_between: false,
            shared_between: false,
            dense_tail: u64::MAX,
        },
    );
}

#[test]
fn a_format_cut_short_leaves_no_volume() {
    let image = small_image();
    let total = {
        let mut cow = Cow::new(&image.base);
        cow.require_sector_writes(512);
        let mut disk = FaultyDisk::counting(&mut cow);
        FatFs::format(&mut disk, &options(512)).unwrap();
        disk.written().bytes
    };
    let mut budgets = budgets(total, 512, 8 * 512);
    budgets.push(512);
    for budget in budgets {
        let when = format!("format over a volume, cut after {budget} of {total} bytes");
        let mut cow = Cow::new(&image.base);
        let mut disk = FaultyDisk::failing_after(&mut cow, budget, Fault::PowerCut);
        // With sector 0 cleared the final open fails; what counts is the disk.
        let _ = FatFs::format(&mut disk, &options(512));
        drop(disk);
        let opened = FatFs::open(&mut cow);
        match budget {
            0 => image.check_bystanders(&mut opened.unwrap(), &when),
            b if b == total => {
                assert_eq!(opened.unwrap().list_dir("").unwrap(), vec![], "{when}");
                assert!(image.fsck_with(&cow).is_clean(), "{when}");
            }
            _ => assert!(
                matches!(opened, Err(FatError::Corrupt(_))),
                "{when}: a half-made volume opened"
            ),
        }
    }
}
