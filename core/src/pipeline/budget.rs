//! The bound on bytes in flight, and the shared "the run has failed" state
//! that stops every stage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use super::PipelineError;

/// A run's shared state: the in-flight byte budget and the first error.
///
/// A stage that fails records its error with [`Run::fail`]; that closes the
/// budget, so a stage waiting for bytes wakes up and stops, and the others
/// see [`Run::has_failed`] or find their channels closed.
pub(super) struct Run {
    limit: u64,
    budget: Mutex<BudgetState>,
    freed: Condvar,
    failed: AtomicBool,
    first_error: Mutex<Option<PipelineError>>,
}

struct BudgetState {
    in_use: u64,
    closed: bool,
}

/// Bytes held against the budget, given back when dropped.
pub(super) struct Lease<'run> {
    run: &'run Run,
    bytes: u64,
}

impl Run {
    pub(super) fn new(limit: u64) -> Self {
        Run {
            limit,
            budget: Mutex::new(BudgetState {
                in_use: 0,
                closed: false,
            }),
            freed: Condvar::new(),
            failed: AtomicBool::new(false),
            first_error: Mutex::new(None),
        }
    }

    /// Waits until `bytes` fit in the budget, or returns `None` once the run
    /// has failed. A request larger than the whole budget is granted when
    /// nothing else is in flight, so one oversized chunk cannot deadlock.
    pub(super) fn acquire(&self, bytes: u64) -> Option<Lease<'_>> {
        let mut state = self.budget.lock().unwrap();
        loop {
            if state.closed {
                return None;
            }
            if state.in_use == 0 || state.in_use + bytes <= self.limit {
                state.in_use += bytes;
                return Some(Lease { run: self, bytes });
            }
            state = self.freed.wait(state).unwrap();
        }
    }

    /// Records `error` if it is the first, and stops the run.
    pub(super) fn fail(&self, error: PipelineError) {
        self.first_error.lock().unwrap().get_or_insert(error);
        self.failed.store(true, Ordering::SeqCst);
        self.budget.lock().unwrap().closed = true;
        self.freed.notify_all();
    }

    pub(super) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The first error recorded, once every stage has stopped.
    pub(super) fn into_result(self) -> Result<(), PipelineError> {
        match self.first_error.into_inner().unwrap() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    #[cfg(test)]
    fn in_use(&self) -> u64 {
        self.budget.lock().unwrap().in_use
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.run.budget.lock().unwrap().in_use -= self.bytes;
        self.run.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn leases_are_given_back_when_dropped() {
        let run = Run::new(100);
        let a = run.acquire(60).unwrap();
        let b = run.acquire(40).unwrap();
        assert_eq!(run.in_use(), 100);
        drop(a);
        assert_eq!(run.in_use(), 40);
        drop(b);
        assert_eq!(run.in_use(), 0);
    }

    #[test]
    fn an_oversized_request_waits_for_an_empty_budget() {
        let run = Run::new(100);
        let small = run.acquire(10).unwrap();
        let (granted_tx, granted_rx) = mpsc::channel();
        thread::scope(|s| {
            s.spawn(|| {
                let big = run.acquire(500).unwrap();
                granted_tx.send(run.in_use()).unwrap();
                drop(big);
            });
            assert!(
                granted_rx.recv_timeout(Duration::from_millis(100)).is_err(),
                "granted while 10 bytes were still in flight"
            );
            drop(small);
            assert_eq!(granted_rx.recv().unwrap(), 500);
        });
    }

    #[test]
    fn failing_wakes_a_waiting_stage_and_keeps_the_first_error() {
        let run = Run::new(100);
        let held = run.acquire(100).unwrap();
        thread::scope(|s| {
            let waiter = s.spawn(|| run.acquire(1).is_none());
            run.fail(PipelineError::BadIndex("first".into()));
            run.fail(PipelineError::BadIndex("second".into()));
            assert!(waiter.join().unwrap(), "a failed run must refuse leases");
        });
        assert!(run.has_failed());
        drop(held);
        match run.into_result() {
            Err(PipelineError::BadIndex(reason)) => assert_eq!(reason, "first"),
            other => panic!("expected the first error, got {other:?}"),
        }
    }
}
