//! The updater's own state on the rw partition: versions that failed, the
//! last check, the channel's latest version as last verified, and the last
//! error. A cache: what must survive its loss (failed versions, revoked
//! keys, the rollback floor) is kept on the ESP too (`update::records`,
//! and each slot's signed meta).
//!
//! Written atomically (temporary file, fsync, rename, fsync of the
//! directory), so a power cut leaves either the old or the new state. A
//! missing file is a fresh start; a corrupt one is set aside and replaced by
//! a fresh state, with a warning, by the commands that write the state
//! (losing it is never worse than a new install); `status` only reports it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use abnix_formats::rollout::Rollout;

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// A version that was tried and fell back (or was rolled back by an
/// operator). It is never installed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedVersion {
    pub version: u64,
    pub id: Uuid,
    pub label: String,
    pub at: DateTime<Utc>,
    pub reason: String,
}

/// The outcome of the last check of the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    pub at: DateTime<Utc>,
    /// The channel's latest version, if the meta could be fetched and verified.
    pub latest: Option<u64>,
    /// What the check concluded, in words ("up to date", "installed 7 into
    /// slot b", "refused: signed by an untrusted key", ...).
    pub result: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// The channel's latest version as last verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestSeen {
    pub version: u64,
    /// The last check that verified it.
    pub at: DateTime<Utc>,
    /// When its meta was signed, and when it expires (absent in a state
    /// written before metas carried them).
    #[serde(default)]
    pub signed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub expires: Option<DateTime<Utc>>,
    /// Its staged rollout, if it has one.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub failed: Vec<FailedVersion>,
    #[serde(default)]
    pub last_check: Option<CheckRecord>,
    /// Kept across checks that fail: a network outage does not make the
    /// latest version unknown.
    #[serde(default)]
    pub latest: Option<LatestSeen>,
    #[serde(default)]
    pub last_error: Option<ErrorRecord>,
}

impl State {
    fn has_failed(&self, version: u64, id: Uuid) -> bool {
        self.failed
            .iter()
            .any(|f| f.version == version || f.id == id)
    }

    /// Records a failed version once; returns whether it was new.
    pub fn record_failed(&mut self, failed: FailedVersion) -> bool {
        if self.has_failed(failed.version, failed.id) {
            return false;
        }
        self.failed.push(failed);
        true
    }
}

/// Where the state lives: a directory on the rw partition.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads the state without changing anything (for `status`): a missing
    /// file is a fresh state, a corrupt one is reported as such.
    pub fn read(&self) -> io::Result<Result<State, CorruptState>> {
        let path = self.dir.join(STATE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Ok(State::default())),
            Err(e) => return Err(e),
        };
        Ok(serde_json::from_slice(&bytes).map_err(|e| CorruptState {
            path,
            reason: e.to_string(),
        }))
    }

    /// Loads the state for a command that writes it; a missing file gives a
    /// fresh state, and so does a corrupt one, which is kept beside it as
    /// `state.json.corrupt` for a human to look at.
    pub fn load(&self) -> io::Result<State> {
        match self.read()? {
            Ok(state) => Ok(state),
            Err(corrupt) => {
                let aside = self.dir.join(format!("{STATE_FILE}.corrupt"));
                tracing::warn!(
                    "{corrupt}; starting from a fresh state, the old file is kept as {}",
                    aside.display()
                );
                fs::rename(&corrupt.path, &aside)?;
                Ok(State::default())
            }
        }
    }

    /// Replaces the state atomically and durably.
    pub fn save(&self, state: &State) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomically(&self.dir.join(STATE_FILE), &bytes)
    }

    /// Takes the updater's lock, waiting up to `wait` for another run to
    /// finish. The lock is an flock, so it dies with its process: a crashed
    /// run never leaves a stale lock behind.
    pub fn lock(&self, wait: Duration) -> Result<Lock, LockError> {
        fs::create_dir_all(&self.dir).map_err(LockError::Io)?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(LockError::Io)?;
        let deadline = Instant::now() + wait;
        loop {
            if try_flock(&file).map_err(LockError::Io)? {
                return Ok(Lock { _file: file });
            }
            if Instant::now() >= deadline {
                return Err(LockError::Busy { path, waited: wait });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether another run holds the lock, found without creating the
    /// directory or the lock file (for `status`).
    pub fn is_locked(&self) -> io::Result<bool> {
        match File::open(self.dir.join(LOCK_FILE)) {
            // Taken for a moment only, and released on drop.
            Ok(file) => Ok(!try_flock(&file)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Takes an exclusive flock on `file` if no one holds it; `Ok(false)` when
/// someone does.
fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// A state file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is corrupt ({reason})", path.display())]
pub struct CorruptState {
    path: PathBuf,
    reason: String,
}

/// Held while an update runs; released on drop (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another abnix-update is running (lock {} still held after {waited:?})", path.display())]
    Busy { path: PathBuf, waited: Duration },
    #[error("taking the update lock: {0}")]
    Io(io::Error),
}

/// Writes `path` so that a power cut leaves either its old or its new
/// content: temporary file, fsync, rename over, fsync of the directory (the
/// rename itself is only durable once the directory is).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(version: u64) -> FailedVersion {
        FailedVersion {
            version,
            id: Uuid::from_u128(version as u128),
            label: format!("v{version}"),
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            reason: "fell back".into(),
        }
    }

    #[test]
    fn save_and_load_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("abnix"));
        assert_eq!(dir.load().unwrap(), State::default(), "missing = fresh");
        let mut state = State::default();
        assert!(state.record_failed(failed(3)));
        assert!(!state.record_failed(failed(3)), "recorded once");
        state.last_error = Some(ErrorRecord {
            at: DateTime::from_timestamp(1_700_000_100, 0).unwrap(),
            message: "network down".into(),
        });
        state.latest = Some(LatestSeen {
            version: 4,
            at: DateTime::from_timestamp(1_700_000_050, 0).unwrap(),
            signed_at: DateTime::from_timestamp(1_700_000_000, 0),
            expires: DateTime::from_timestamp(1_702_592_000, 0),
            rollout: Some(Rollout {
                start: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                over_secs: 3600,
                halted_at: None,
            }),
        });
        dir.save(&state).unwrap();
        assert_eq!(dir.load().unwrap(), state);
        assert!(state.has_failed(3, Uuid::nil()));
        assert!(
            state.has_failed(9, Uuid::from_u128(3)),
            "same id counts too"
        );
        assert!(!state.has_failed(4, Uuid::nil()));
    }

    #[test]
    fn corrupt_state_is_reported_by_read_and_set_aside_by_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        fs::write(tmp.path().join(STATE_FILE), b"{\"failed\": [tru").unwrap();
        let corrupt = dir.read().unwrap().unwrap_err();
        assert_eq!(corrupt.path, tmp.path().join(STATE_FILE));
        assert!(
            corrupt.to_string().contains("state.json is corrupt"),
            "{corrupt}"
        );
        assert_eq!(
            fs::read(tmp.path().join(STATE_FILE)).unwrap(),
            b"{\"failed\": [tru",
            "read changes nothing"
        );
        assert_eq!(dir.load().unwrap(), State::default());
        assert!(tmp.path().join("state.json.corrupt").exists());
        assert!(!tmp.path().join(STATE_FILE).exists());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["f"]);
    }

    #[test]
    fn second_lock_waits_then_gives_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path());
        let held = dir.lock(Duration::ZERO).unwrap();
        match dir.lock(Duration::from_millis(300)) {
            Err(LockError::Busy { waited, .. }) => assert_eq!(waited, Duration::from_millis(300)),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(held);
        dir.lock(Duration::ZERO).expect("free again after drop");
    }

    #[test]
    fn is_locked_sees_a_held_lock_and_creates_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::new(tmp.path().join("abnix"));
        assert!(!dir.is_locked().unwrap());
        assert!(!tmp.path().join("abnix").exists(), "nothing created");
        let held = dir.lock(Duration::ZERO).unwrap();
        assert!(dir.is_locked().unwrap());
        drop(held);
        assert!(!dir.is_locked().unwrap());
        dir.lock(Duration::ZERO)
            .expect("is_locked left the lock free");
    }
}
