//! Progress reporting: indicatif bars on a terminal, plain periodic lines in
//! a journal.

/// Receives progress from long operations (image writes, uploads, downloads).
pub trait Progress: Send + Sync {
    /// A new phase begins, e.g. "writing slot a", with its total in bytes if
    /// known.
    fn start(&self, phase: &str, total: Option<u64>);
    /// `bytes` more bytes of the current phase are done.
    fn advance(&self, bytes: u64);
    /// The current phase is complete.
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    fn advance(&self, _bytes: u64) {}
    fn finish(&self) {}
}
